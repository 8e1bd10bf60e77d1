"""TLS (a self-signed certificate made here) and bearer-token auth over gRPC and REST, on one
in-process server started for this module."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import socket

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import toy_models
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from client import ModelServerClient, ModelServerError, ServerUnavailable
from serving import cli
from serving.protos import SSLConfig
from serving.security import TlsConfig
from serving.server import ModelServer, ServerOptions, build_manager

TOKEN = "s3cret-token"
METRICS = "/monitoring/prometheus/metrics"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed() -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) for localhost and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    key, cert = self_signed()
    (folder / "key.pem").write_bytes(key)
    (folder / "cert.pem").write_bytes(cert)
    (folder / "token").write_text(TOKEN + "\n")
    # TF Serving's --ssl_config_file holds the PEM text itself (newlines escaped as \n).
    config = SSLConfig(server_key=key.decode(), server_cert=cert.decode(), client_verify=False)
    (folder / "ssl.config").write_text(text_format.MessageToString(config))
    return folder


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    toy_models.export_and_push(toy_models.CounterModel(7), root / "counter", 7)
    options = ServerOptions(
        port=free_port(),
        rest_api_port=free_port(),
        tls=TlsConfig.from_ssl_config_file(pki / "ssl.config"),
        token=TOKEN,
        metrics_path=METRICS,
    )
    server = ModelServer(build_manager(models_root=str(root), poll_wait_seconds=0), options)
    server.start()
    yield server
    server.stop(grace=1)


@pytest.fixture(scope="module")
def secure_channel(server, pki):
    credentials = grpc.ssl_channel_credentials((pki / "cert.pem").read_bytes())
    with grpc.secure_channel(f"localhost:{server.grpc_port}", credentials) as channel:
        yield channel


def counter_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "counter"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([1])))
    return request


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_startup_line_says_tls_and_token(server):
    line = server.describe()
    assert "(TLS)" in line and "https://" in line and "bearer token required" in line


def test_grpc_over_tls_with_the_token_answers(secure_channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(secure_channel)
    response = stub.Predict(counter_request(), timeout=10, metadata=bearer(TOKEN))
    assert response.model_spec.version.value == 7
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [8.0]


@pytest.mark.parametrize("metadata", [None, bearer("wrong"), [("authorization", TOKEN)]])
def test_grpc_without_the_right_token_is_unauthenticated(secure_channel, metadata):
    predictions = prediction_service_pb2_grpc.PredictionServiceStub(secure_channel)
    models = model_service_pb2_grpc.ModelServiceStub(secure_channel)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "counter"
    for call, request in (
        (predictions.Predict, counter_request()),
        (models.GetModelStatus, status),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=10, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer" in caught.value.details()


def test_plaintext_client_cannot_reach_a_tls_server(server):
    with ModelServerClient(f"127.0.0.1:{server.grpc_port}", timeout=5, token=TOKEN) as client:
        with pytest.raises(ServerUnavailable) as caught:
            client.status("counter")
    assert "genpipe serve" in str(caught.value)


def test_client_library_with_root_cert_and_token(server, pki):
    address = f"localhost:{server.grpc_port}"
    with ModelServerClient(address, root_cert=pki / "cert.pem", token=TOKEN) as client:
        assert [s.state for s in client.status("counter")] == ["AVAILABLE"]
        assert client.predict("counter", {"x": np.float32([2])})["y"].tolist() == [9.0]
    with ModelServerClient(address, root_cert=pki / "cert.pem", token="nope") as client:
        with pytest.raises(ModelServerError) as caught:
            client.status("counter")
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_rest_over_https_needs_the_token(server, pki):
    url = f"https://localhost:{server.rest_port}/v1/models/counter"
    verify = str(pki / "cert.pem")
    ok = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, verify=verify, timeout=10)
    assert ok.status_code == 200
    assert ok.json()["model_version_status"][0]["state"] == "AVAILABLE"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        refused = requests.post(f"{url}:predict", json={"instances": [1.0]}, headers=headers,
                                verify=verify, timeout=10)  # fmt: skip
        assert refused.status_code == 401
        assert "Bearer" in refused.json()["error"]
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url.replace("https", "http"), timeout=10)


def test_metrics_page_needs_the_token_too(server, pki):
    url = f"https://localhost:{server.rest_port}{METRICS}"
    verify = str(pki / "cert.pem")
    assert requests.get(url, verify=verify, timeout=10).status_code == 401
    page = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, verify=verify)
    assert page.status_code == 200 and "genpipe_serving_requests_total" in page.text


def test_cert_and_key_files_work_like_the_ssl_config(pki):
    from_files = TlsConfig.from_files(pki / "cert.pem", pki / "key.pem")
    assert from_files == TlsConfig.from_ssl_config_file(pki / "ssl.config")
    assert from_files.ssl_context() is not None


def _serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["serve", "--models_root", ".", *argv])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--ssl_cert", "c.pem"], "go together"),
        (["--ssl_config_file", "s", "--ssl_cert", "c", "--ssl_key", "k"], "not both"),
        (["--auth_token_file", "/no/such/token"], "cannot read"),
        (["--max_message_mb", "0"], "positive"),
    ],
)
def test_bad_security_flags_are_clear_errors(argv, needle):
    with pytest.raises(ValueError) as caught:
        cli._server_options(_serve_args(*argv))
    assert needle in str(caught.value)


# -- every endpoint, as the server registered it ------------------------------------------------

# Methods any version of the server must keep: the walk below must have found at least these.
KNOWN_METHODS = {
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/Regress",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    "/genpipe.serving.GenerationService/GenerateStream",
}


def _grpc_code(channel, method: str, metadata) -> grpc.StatusCode:
    """The status of an empty request to ``method`` (read as a stream: fits unary methods too)."""
    call = channel.unary_stream(method)
    try:
        for _ in call(b"", timeout=10, metadata=metadata):
            pass
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_every_grpc_method_the_server_registers_needs_the_token(server, secure_channel):
    methods = [method for _, method in server.endpoints()["grpc"]]
    assert KNOWN_METHODS <= set(methods), sorted(methods)
    for method in methods:
        for metadata in (None, bearer("wrong"), [("authorization", f"Basic {TOKEN}")]):
            assert _grpc_code(secure_channel, method, metadata) == (
                grpc.StatusCode.UNAUTHENTICATED
            ), (method, metadata)
        # With the token the same empty request reaches the method (which may refuse it).
        answered = _grpc_code(secure_channel, method, bearer(TOKEN))
        assert answered not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED) \
            or method.endswith(("/Classify", "/Regress", "/MultiInference")), (method, answered)
    unknown = "/tensorflow.serving.PredictionService/NoSuchMethod"
    assert _grpc_code(secure_channel, unknown, None) == grpc.StatusCode.UNAUTHENTICATED


def test_every_rest_url_the_server_registers_needs_the_token(server, pki):
    endpoints = server.endpoints()["rest"]
    assert ("GET", METRICS) in endpoints and ("POST", "/v1/models/{name}:predict") in endpoints
    base = f"https://localhost:{server.rest_port}"
    verify = str(pki / "cert.pem")
    body = {"instances": [1.0]}
    for method, template in [*endpoints, ("GET", "/no/such/page")]:
        url = base + template.format(name="counter", version=7, label="stable")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = requests.request(method, url, json=body, headers=headers, verify=verify,
                                      timeout=10)  # fmt: skip
            assert answer.status_code == 401, (method, url, headers, answer.text[:200])
        allowed = requests.request(method, url, json=body, verify=verify, timeout=10,
                                   headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert allowed.status_code != 401, (method, url)


def test_with_client_certificates_a_client_without_one_is_refused(pki, tmp_path):
    """client_verify: the server's own self-signed certificate is the only client CA."""
    key, cert = (pki / "key.pem").read_bytes(), (pki / "cert.pem").read_bytes()
    toy_models.export_and_push(toy_models.CounterModel(7), tmp_path / "counter", 7)
    tls = TlsConfig(key=key, cert=cert, client_ca=cert, client_verify=True)
    options = ServerOptions(port=free_port(), rest_api_port=free_port(), tls=tls)
    with ModelServer(build_manager(models_root=str(tmp_path), poll_wait_seconds=0), options) as s:
        address = f"localhost:{s.grpc_port}"
        without = grpc.ssl_channel_credentials(cert)
        with_cert = grpc.ssl_channel_credentials(cert, private_key=key, certificate_chain=cert)
        with grpc.secure_channel(address, without) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(counter_request(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(address, with_cert) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(counter_request(), timeout=10).model_spec.version.value == 7
        url = f"https://localhost:{s.rest_port}/v1/models/counter"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, verify=str(pki / "cert.pem"), timeout=10)
        answer = requests.get(url, verify=str(pki / "cert.pem"), timeout=10,
                              cert=(str(pki / "cert.pem"), str(pki / "key.pem")))  # fmt: skip
        assert answer.status_code == 200
