"""Odd input (issue 13): REST bodies that parse but are strange, clients that stall or speak TLS
to the plain port, and names that try to leave the base paths, over REST, gRPC and
models.config. One in-process server on toy models, with a 1 s client timeout."""

from __future__ import annotations

import socket
import ssl
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import toy_models
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from test_serving import free_port

from serving import config as config_lib
from serving import flags, names
from serving.errors import ServingError
from serving.server import ModelServer, ServerOptions, build_manager

CLIENT_TIMEOUT = 1.0  # seconds (the server's default is flags.REST_API_CLIENT_TIMEOUT_SECONDS)
DROPPED_WITHIN = 8.0  # seconds: the timeout plus slack for a loaded 2-core machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd_input")
    toy_models.export_and_push(toy_models.CounterModel(3), root / "counter", 3)
    toy_models.export_and_push(toy_models.StringsModel(), root / "strings", 1)
    # A model folder beside the root that no request may reach.
    toy_models.export_and_push(toy_models.CounterModel(9), root.parent / "outside", 1)
    options = ServerOptions(
        port=0, rest_api_port=free_port(), workers=4,
        rest_api_client_timeout_seconds=CLIENT_TIMEOUT,
    )  # fmt: skip
    server = ModelServer(build_manager(models_root=str(root), poll_wait_seconds=0), options)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    server.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    server.models = model_service_pb2_grpc.ModelServiceStub(channel)
    server.rest = f"http://127.0.0.1:{server.rest_port}"
    yield server
    channel.close()
    server.stop(grace=1)


def _still_serves(server) -> None:
    answer = requests.post(f"{server.rest}/v1/models/counter:predict",
                           json={"instances": [1.0]}, timeout=30)  # fmt: skip
    assert answer.status_code == 200 and answer.json()["predictions"][0]["y"] == 4.0


def test_the_client_timeout_is_a_flag_with_a_default():
    assert ServerOptions().rest_api_client_timeout_seconds == flags.REST_API_CLIENT_TIMEOUT_SECONDS
    assert flags.REST_API_CLIENT_TIMEOUT_SECONDS == 30.0


# -- REST bodies that parse but are odd --------------------------------------------------------

DEEP = 100_000
ODD_BODIES = [
    ("lists nested 100,000 deep", "counter",
     b'{"instances": ' + b"[" * DEEP + b"]" * DEEP + b"}", "nested too deeply"),
    ("objects nested 100,000 deep", "counter",
     b'{"inputs": ' + b'{"x": ' * DEEP + b"1" + b"}" * DEEP + b"}", "nested too deeply"),
    ("lists nested 600 deep around a value", "counter",
     b'{"instances": ' + b"[" * 600 + b"1" + b"]" * 600 + b"}", "--max_tensor_rank"),
    ("objects nested 600 deep", "counter",
     b'{"inputs": ' + b'{"x": ' * 600 + b"1" + b"}" * 600 + b"}", "input 'x'"),
    ("a lone high surrogate in a string", "strings", b'{"instances": ["\\ud800"]}',
     "lone UTF-16 surrogate"),
    ("a lone low surrogate in b64", "strings", b'{"instances": [{"b64": "\\udc00"}]}',
     "not valid base64"),
    ("a lone surrogate as a key", "counter", b'{"inputs": {"\\ud800": [1.0]}}',
     "unexpected input"),
    ("a lone surrogate as the signature", "counter",
     b'{"signature_name": "\\ud800", "instances": [1.0]}', "not found"),
    ("an integer of 5,000 digits", "counter", b'{"instances": [' + b"9" * 5000 + b"]}",
     "too long"),
    ("an integer of 4,000 digits", "counter", b'{"instances": [' + b"9" * 4000 + b"]}",
     "input 'x'"),
    ("a negative integer of 3,000 digits", "counter",
     b'{"instances": [-' + b"9" * 3000 + b"]}", "input 'x'"),
    ("an integer of 5,000 digits for a string", "strings",
     b'{"instances": [' + b"1" * 5000 + b"]}", "too long"),
]  # fmt: skip


@pytest.mark.parametrize("what, model, body, words", ODD_BODIES, ids=[c[0] for c in ODD_BODIES])
def test_odd_json_bodies_get_400_with_a_message(server, what, model, body, words):
    answer = requests.post(f"{server.rest}/v1/models/{model}:predict", data=body, timeout=60)
    assert answer.status_code == 400, answer.text[:300]
    assert words in answer.json()["error"], answer.text[:300]


@pytest.mark.parametrize("suffix", ["", "/metadata", ":predict"])
@pytest.mark.parametrize("version", ["99999999999999999999", "9223372036854775808",
                                     "9" * 5000])  # fmt: skip
def test_out_of_range_versions_get_400(server, version, suffix):
    url = f"{server.rest}/v1/models/counter/versions/{version}{suffix}"
    if suffix == ":predict":
        answer = requests.post(url, json={"instances": [1.0]}, timeout=30)
    else:
        answer = requests.get(url, timeout=30)
    assert answer.status_code == 400, answer.text[:300]
    assert "out of range" in answer.json()["error"] and str(names.MAX_VERSION) in answer.text
    largest = requests.get(f"{server.rest}/v1/models/counter/versions/{names.MAX_VERSION}")
    assert largest.status_code == 404  # in range, just not there


# -- clients that stall --------------------------------------------------------------------------


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes ``sock`` (reading whatever it sends first)."""
    started = time.monotonic()
    sock.settimeout(DROPPED_WITHIN + 5)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, TimeoutError):
        pass
    return time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [
        b"POST /v1/models/counter:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
        b"POST /v1/models/counter:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
        b"GET /v1/models/counter HTTP/1.1\r\nHost: x\r\n",  # headers never end
        b"",  # connects and says nothing
    ],
    ids=["declared body never sent", "body stops midway", "headers never end", "silence"],
)
def test_a_client_that_stalls_is_dropped_after_the_timeout(server, sent):
    with socket.create_connection(("127.0.0.1", server.rest_port)) as sock:
        sock.sendall(sent)
        seconds = _closed_after(sock)
    assert CLIENT_TIMEOUT * 0.9 <= seconds < DROPPED_WITHIN, seconds
    _still_serves(server)


def test_a_tls_client_on_the_plain_port_is_dropped(server):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.rest_port)) as raw:
        raw.settimeout(DROPPED_WITHIN + 5)
        with pytest.raises((ssl.SSLError, OSError)) as caught:
            context.wrap_socket(raw, server_hostname="localhost")
    assert not isinstance(caught.value, TimeoutError), "the server held the connection"
    assert time.monotonic() - started < DROPPED_WITHIN
    _still_serves(server)


# -- names ---------------------------------------------------------------------------------------

BAD_NAMES = ["../outside", "..", "/etc/passwd", "a\0b", "x" * 300, "counter\n", "a\\..\\b"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:12]))
def test_bad_names_in_rest_urls_are_refused(server, name):
    quoted = "".join(f"%{byte:02X}" for byte in name.encode())  # every byte, dots too
    for method, url in [
        ("GET", f"/v1/models/{quoted}"),
        ("GET", f"/v1/models/{quoted}/metadata"),
        ("POST", f"/v1/models/{quoted}:predict"),
        ("GET", f"/v1/models/counter/labels/{quoted}"),
        ("POST", f"/v1/models/counter/labels/{quoted}:predict"),
    ]:
        answer = requests.request(method, server.rest + url, json={"instances": [1.0]},
                                  timeout=30)  # fmt: skip
        assert answer.status_code == 400, (url, answer.text[:200])
        assert "is not allowed" in answer.json()["error"], answer.text[:200]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:12]))
def test_bad_names_in_grpc_model_specs_are_refused(server, name):
    predict = predict_pb2.PredictRequest()
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([1])))
    status = get_model_status_pb2.GetModelStatusRequest()
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    calls = [(server.stub.Predict, predict), (server.models.GetModelStatus, status),
             (server.stub.GetModelMetadata, metadata)]  # fmt: skip
    for call, request in calls:
        for spec in ({"name": name}, {"name": "counter", "version_label": name}):
            request.model_spec.Clear()
            for field, value in spec.items():
                setattr(request.model_spec, field, value)
            with pytest.raises(grpc.RpcError) as caught:
                call(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, spec
            assert "is not allowed" in caught.value.details()
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "counter"
    request.model_spec.version.value = -1
    with pytest.raises(grpc.RpcError) as caught:
        server.models.GetModelStatus(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "out of range" in caught.value.details()


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:12]))
def test_bad_names_in_models_config_are_refused(tmp_path, name):
    for field in ("name", "label"):
        config = config_lib.ModelServerConfig()
        model = config.model_config_list.config.add(name="counter", base_path=str(tmp_path))
        if field == "name":
            model.name = name
        else:
            model.version_labels[name] = 1
        (tmp_path / "models.config").write_text(text_format.MessageToString(config))
        with pytest.raises(ServingError) as caught:
            config_lib.read_model_config_file(tmp_path / "models.config")
        assert "is not allowed" in caught.value.message


def test_model_folders_with_bad_names_are_not_served(tmp_path):
    assert config_lib.model_folders(tmp_path) == []
    for name in ("bad name", "new\nline", "good"):
        toy_models.push(toy_models.save(toy_models.CounterModel(1), tmp_path / "x"),
                        tmp_path / name, 1)  # fmt: skip
    assert [f.name for f in config_lib.model_folders(tmp_path)] == ["good"]
