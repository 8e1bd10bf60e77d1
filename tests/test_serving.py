"""The model server as clients see it: the official TF Serving stubs and plain HTTP against one
`python -m serving serve` process (started once for this module) on tiny SavedModels."""

from __future__ import annotations

import base64
import io
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import toy_models
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

POLL_SECONDS = 0.2
MAX_MESSAGE_MB = 1
METRICS_PATH = "/metrics/genpipe"
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_text(root: Path, labels: dict[str, int], drop: tuple[str, ...] = ()) -> str:
    models = []
    for name in ("strings", "scale", "counter", "labeled"):
        if name in drop:
            continue
        extra = ""
        if name == "labeled":
            extra = " model_version_policy { specific { versions: 1 versions: 2 } }"
            extra += "".join(
                f' version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items()
            )
        models.append(
            f'config {{ name: "{name}" base_path: "{root / name}" '
            f'model_platform: "tensorflow"{extra} }}'
        )
    return "model_config_list { " + " ".join(models) + " }"


def parse_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    from google.protobuf import text_format

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


class Server:
    """A `python -m serving serve` subprocess and its output."""

    def __init__(self, args: list[str]):
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", "serve", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"server never printed {text!r}:\n{''.join(self.log)}")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """SavedModels exported once, pushed into the model root by the tests."""
    scratch = tmp_path_factory.mktemp("exports")
    return {
        "strings": toy_models.save(toy_models.StringsModel(), scratch / "strings"),
        "scale": toy_models.save(toy_models.ScaleModel(), scratch / "scale"),
        "counter1": toy_models.save(toy_models.CounterModel(1), scratch / "counter1"),
        "counter2": toy_models.save(toy_models.CounterModel(2), scratch / "counter2"),
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory, exports):
    root = tmp_path_factory.mktemp("models")
    toy_models.push(exports["strings"], root / "strings", 1)
    toy_models.push(exports["scale"], root / "scale", 1)
    toy_models.push(exports["counter1"], root / "counter", 1)
    toy_models.push(exports["counter1"], root / "labeled", 1)
    toy_models.push(exports["counter2"], root / "labeled", 2)
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    files = tmp_path_factory.mktemp("config")
    config = files / "models.config"
    config.write_text(config_text(root, {"stable": 1, "canary": 2}))
    monitoring = files / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}')
    grpc_port, rest_port = free_port(), free_port()
    process = Server(
        [
            "--model_config_file", str(config),
            "--port", str(grpc_port),
            "--rest_api_port", str(rest_port),
            "--file_system_poll_wait_seconds", str(POLL_SECONDS),
            "--monitoring_config_file", str(monitoring),
            "--max_message_mb", str(MAX_MESSAGE_MB),
        ]
    )  # fmt: skip
    banner = process.wait_for("genpipe model server:")
    process.grpc = f"127.0.0.1:{grpc_port}"
    process.rest = f"http://127.0.0.1:{rest_port}"
    process.banner = banner
    process.root = root
    yield process
    if process.process.poll() is None:
        process.process.kill()
        process.process.wait()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(
        server.grpc, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
    ) as channel:
        yield channel


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


def predict_request(model, inputs, signature="", version=None, label=None, output_filter=()):
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def outputs(response) -> dict[str, np.ndarray]:
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def png_bytes(value: int, size=(4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def status_of(models, name, version=None) -> dict[int, tuple[str, int, str]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    response = models.GetModelStatus(request, timeout=10)
    name_of = get_model_status_pb2.ModelVersionStatus.State.Name
    return {
        s.version: (name_of(s.state), s.status.error_code, s.status.error_message)
        for s in response.model_version_status
    }


def wait_until(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- startup ---------------------------------------------------------------------------------


def test_startup_prints_one_line_with_addresses_and_models(server):
    assert server.grpc in server.banner and server.rest.removeprefix("http://") in server.banner
    for name in ("strings v1", "scale v1", "counter v1", "labeled v1,2"):
        assert name in server.banner


# -- gRPC Predict ----------------------------------------------------------------------------


def test_predict_strings_default_signature(predictions):
    request = predict_request("strings", {"text": np.array([b"hello", b"ab"], dtype=object)})
    response = predictions.Predict(request, timeout=10)
    result = outputs(response)
    assert result["upper"].tolist() == [b"HELLO", b"AB"]
    assert result["length"].tolist() == [5, 2]
    assert response.model_spec.name == "strings"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    # Typed value fields, as TF Serving fills them (clients reading string_val keep working).
    assert list(response.outputs["upper"].string_val) == [b"HELLO", b"AB"]


def test_predict_bytes_in_and_out(predictions):
    images = np.array([png_bytes(10), png_bytes(200, (5, 2))], dtype=object)
    result = outputs(predictions.Predict(predict_request("strings", {"image": images}, "decode")))
    assert result["height"].tolist() == [3, 2] and result["width"].tolist() == [4, 5]
    np.testing.assert_allclose(result["mean"], [10, 200])
    made = outputs(
        predictions.Predict(predict_request("strings", {"value": np.float32([0.5])}, "png"))
    )
    pixels = np.asarray(Image.open(io.BytesIO(made["image_bytes"][0])))
    assert pixels.shape == (2, 3) and (pixels == 128).all()


def test_predict_floats_and_output_filter(predictions):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    request = predict_request("scale", {"x": x, "temperature": np.float32([0.5, 2.0])})
    np.testing.assert_allclose(outputs(predictions.Predict(request))["y"], x * [[0.5], [2.0]])
    filtered = predict_request(
        "strings", {"text": np.array([b"abc"], dtype=object)}, output_filter=["length"]
    )
    assert list(predictions.Predict(filtered).outputs) == ["length"]


def test_same_seed_gives_the_same_sample(predictions):
    def sample(seeds):
        request = predict_request("scale", {"seed": np.int64(seeds)}, "sample")
        return outputs(predictions.Predict(request))["z"]

    first, again = sample([1, 2, 1]), sample([1, 2, 1])
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[0], first[2])
    assert not np.allclose(first[0], first[1])


def test_unimplemented_apis_say_what_to_use(predictions):
    calls = [
        (predictions.Classify, classification_pb2.ClassificationRequest()),
        (predictions.Regress, regression_pb2.RegressionRequest()),
        (predictions.MultiInference, inference_pb2.MultiInferenceRequest()),
    ]
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as caught:
            method(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "Predict" in caught.value.details()


# -- metadata and status ---------------------------------------------------------------------


def test_metadata_lists_signatures_with_dtypes_and_shapes(predictions, http, server):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "scale"
    response = predictions.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == "scale" and response.model_spec.version.value == 1
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    signatures = signature_map.signature_def
    assert {"serving_default", "sample"} <= set(signatures)
    x = signatures["serving_default"].inputs["x"]
    assert x.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in x.tensor_shape.dim] == [-1, 3]
    assert signatures["sample"].inputs["seed"].dtype == tf.int64.as_datatype_enum
    assert signatures["serving_default"].method_name == "tensorflow/serving/predict"

    rest = http.get(f"{server.rest}/v1/models/scale/versions/1/metadata", timeout=10).json()
    assert rest["model_spec"] == {"name": "scale", "signature_name": "", "version": "1"}
    rest_x = rest["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]
    assert rest_x["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in rest_x["tensor_shape"]["dim"]] == ["-1", "3"]


def test_model_status_over_grpc_and_rest(models, http, server):
    assert status_of(models, "labeled") == {
        2: ("AVAILABLE", 0, ""),
        1: ("AVAILABLE", 0, ""),
    }
    assert status_of(models, "labeled", version=1) == {1: ("AVAILABLE", 0, "")}
    assert http.get(f"{server.rest}/v1/models/counter", timeout=10).json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    by_label = http.get(f"{server.rest}/v1/models/labeled/labels/stable", timeout=10).json()
    assert [s["version"] for s in by_label["model_version_status"]] == ["1"]


# -- labels ----------------------------------------------------------------------------------


def test_labels_route_to_their_versions(predictions, http, server):
    for label, version in (("stable", 1), ("canary", 2)):
        request = predict_request("labeled", {"x": np.float32([10])}, label=label)
        response = predictions.Predict(request, timeout=10)
        assert response.model_spec.version.value == version
        assert outputs(response)["version"].tolist() == [version]
        body = {"instances": [10.0]}
        rest = http.post(f"{server.rest}/v1/models/labeled/labels/{label}:predict", json=body)
        assert rest.json()["predictions"] == [{"version": version, "y": 10.0 + version}]
    pinned = http.post(f"{server.rest}/v1/models/labeled/versions/1:predict", json=body)
    assert pinned.json()["predictions"][0]["version"] == 1


# -- REST Predict ----------------------------------------------------------------------------


def test_rest_row_format(http, server):
    body = {"instances": [{"x": [1, 2, 3], "temperature": 2}, {"x": [0, 0.5, 1], "temperature": 0}]}
    reply = http.post(f"{server.rest}/v1/models/scale:predict", json=body, timeout=10)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {"predictions": [[2.0, 4.0, 6.0], [0.0, 0.0, 0.0]]}
    strings = http.post(
        f"{server.rest}/v1/models/strings:predict", json={"instances": ["ab", "xyz"]}
    ).json()
    assert strings == {"predictions": [{"upper": "AB", "length": 2}, {"upper": "XYZ", "length": 3}]}


def test_rest_columnar_format_with_b64(http, server):
    image = base64.b64encode(png_bytes(77)).decode()
    body = {"signature_name": "decode", "inputs": {"image": [{"b64": image}]}}
    reply = http.post(f"{server.rest}/v1/models/strings:predict", json=body, timeout=10).json()
    assert reply == {"outputs": {"height": [3], "width": [4], "mean": [77.0]}}
    # A bare value (one input) and a single b64 object in the row format work too.
    rows = {"signature_name": "decode", "instances": [{"b64": image}]}
    assert http.post(f"{server.rest}/v1/models/strings:predict", json=rows).json() == {
        "predictions": [{"height": 3, "width": 4, "mean": 77.0}]
    }
    scaled = {"inputs": {"x": [[0.1, 0.2, 0.3]], "temperature": [1.0]}}
    # float32 results print as the shortest text that reads back to the same float32.
    assert http.post(f"{server.rest}/v1/models/scale:predict", json=scaled).json() == {
        "outputs": [[0.1, 0.2, 0.3]]
    }


def test_rest_returns_b64_for_bytes_outputs(http, server):
    body = {"signature_name": "png", "inputs": [0.0, 1.0]}
    reply = http.post(f"{server.rest}/v1/models/strings:predict", json=body).json()["outputs"]
    for alias in ("image_bytes", "image"):  # `image`: PNG is not UTF-8, so b64 too
        decoded = [base64.b64decode(item["b64"]) for item in reply[alias]]
        pixels = [np.asarray(Image.open(io.BytesIO(png))) for png in decoded]
        assert [int(p.max()) for p in pixels] == [0, 255]


def test_rest_b64_suffix_rule_for_text_outputs(http, server):
    reply = http.post(f"{server.rest}/v1/models/strings:predict", json={"inputs": ["héllo"]}).json()
    assert reply["outputs"]["upper"] == ["HéLLO"]  # plain UTF-8 text, not b64


# -- bad requests ----------------------------------------------------------------------------

SCALE_OK = {"x": np.float32([[1, 2, 3]]), "temperature": np.float32([1])}
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _malformed_tensor():
    request = predict_request("counter", {})
    tensor = request.inputs["x"]
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add(size=2)
    tensor.float_val.extend([1.0, 2.0, 3.0])  # 3 values for shape [2]
    return request


def _metadata(fields, name="scale"):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = name
    return request


GRPC_BAD = {
    "unknown model": (
        lambda: predict_request("nope", {"x": np.float32([1])}),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    ),
    "unknown version": (
        lambda: predict_request("counter", {"x": np.float32([1])}, version=99),
        grpc.StatusCode.NOT_FOUND,
        "99",
    ),
    "unknown label": (
        lambda: predict_request("labeled", {"x": np.float32([1])}, label="beta"),
        INVALID,
        "beta",
    ),
    "unknown signature": (
        lambda: predict_request("scale", SCALE_OK, "nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "nope",
    ),
    "missing input": (
        lambda: predict_request("scale", {"x": SCALE_OK["x"]}),
        INVALID,
        "temperature",
    ),
    "extra input": (
        lambda: predict_request("counter", {"x": np.float32([1]), "z": np.float32([1])}),
        INVALID,
        "'z'",
    ),
    "wrong dtype": (
        lambda: predict_request("scale", {**SCALE_OK, "temperature": np.int32([1])}),
        INVALID,
        "DT_INT32",
    ),
    "string for float": (
        lambda: predict_request("counter", {"x": np.array([b"1"], dtype=object)}),
        INVALID,
        "DT_STRING",
    ),
    "wrong rank": (
        lambda: predict_request("scale", {**SCALE_OK, "x": np.float32([1, 2, 3])}),
        INVALID,
        "shape",
    ),
    "wrong fixed dimension": (
        lambda: predict_request("scale", {**SCALE_OK, "x": np.float32([[1, 2, 3, 4]])}),
        INVALID,
        "[-1,3]",
    ),
    "value above range": (
        lambda: predict_request("scale", {**SCALE_OK, "temperature": np.float32([3])}),
        INVALID,
        "temperature: must be in [0, 2]",
    ),
    "value below range": (
        lambda: predict_request("scale", {**SCALE_OK, "temperature": np.float32([-1])}),
        INVALID,
        "temperature: must be in [0, 2]",
    ),
    "png value out of range": (
        lambda: predict_request("strings", {"value": np.float32([2])}, "png"),
        INVALID,
        "value: must be in [0, 1]",
    ),
    "not an image": (
        lambda: predict_request("strings", {"image": np.array([b"jpeg?"], dtype=object)}, "decode"),
        INVALID,
        "",
    ),
    "empty model name": (
        lambda: predict_request("", {"x": np.float32([1])}),
        INVALID,
        "name",
    ),
    "unknown output filter": (
        lambda: predict_request("counter", {"x": np.float32([1])}, output_filter=["nope"]),
        INVALID,
        "nope",
    ),
    "duplicate output filter": (
        lambda: predict_request("counter", {"x": np.float32([1])}, output_filter=["y", "y"]),
        INVALID,
        "duplicate",
    ),
    "malformed tensor": (_malformed_tensor, INVALID, "x"),
}


@pytest.mark.parametrize("case", sorted(GRPC_BAD))
def test_bad_grpc_predict_requests(predictions, case):
    build, code, needle = GRPC_BAD[case]
    with pytest.raises(grpc.RpcError) as caught:
        predictions.Predict(build(), timeout=10)
    assert caught.value.code() == code, caught.value.details()
    assert needle in caught.value.details()


def test_bad_grpc_metadata_and_status_requests(predictions, models):
    not_found = grpc.StatusCode.NOT_FOUND
    cases = [
        (lambda: predictions.GetModelMetadata(_metadata([])), INVALID),
        (lambda: predictions.GetModelMetadata(_metadata(["graph"])), INVALID),
        (lambda: predictions.GetModelMetadata(_metadata(["signature_def"], "nope")), not_found),
        (lambda: status_of(models, "nope"), not_found),
        (lambda: status_of(models, "counter", version=42), not_found),
    ]
    for call, code in cases:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == code and caught.value.details()


def test_oversized_grpc_message_is_refused(predictions):
    big = np.zeros([MAX_MESSAGE_MB * 1024 * 1024 // 4 + 10], np.float32)
    with pytest.raises(grpc.RpcError) as caught:
        predictions.Predict(predict_request("counter", {"x": big}), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


COUNTER, SCALE, STRINGS = (f"/v1/models/{m}:predict" for m in ("counter", "scale", "strings"))
MALFORMED = "Malformed request"


def post(path, body=None, raw=None):
    return "POST", path, body, raw


def get(path):
    return "GET", path, None, None


REST_BAD = {
    "malformed JSON": (post(COUNTER, raw=b'{"instances": [1,'), 400, "JSON"),
    "body not an object": (post(COUNTER, [1, 2]), 400, "object"),
    "empty body": (post(COUNTER, raw=b""), 400, "empty"),
    "no instances or inputs": (post(COUNTER, {"x": [1]}), 400, "instances"),
    "both instances and inputs": (
        post(COUNTER, {"instances": [1], "inputs": [1]}),
        400,
        "only one",
    ),
    "empty instances": (post(COUNTER, {"instances": []}), 400, "instances"),
    "instances not a list": (post(COUNTER, {"instances": 1}), 400, "list"),
    "unknown model": (post("/v1/models/nope:predict", {"instances": [1]}), 404, "nope"),
    "unknown version": (
        post("/v1/models/counter/versions/7:predict", {"instances": [1]}),
        404,
        "7",
    ),
    "unknown label": (
        post("/v1/models/labeled/labels/beta:predict", {"instances": [1]}),
        400,
        "beta",
    ),
    "unknown signature": (post(COUNTER, {"signature_name": "no", "instances": [1]}), 400, '"no"'),
    "signature not a string": (
        post(COUNTER, {"signature_name": 3, "instances": [1]}),
        400,
        "string",
    ),
    "string for float": (post(COUNTER, {"instances": ["one"]}), 400, "DT_FLOAT"),
    "bool for float": (post(COUNTER, {"instances": [True]}), 400, "DT_FLOAT"),
    "float for int64": (
        post(SCALE, {"signature_name": "sample", "instances": [1.5]}),
        400,
        "DT_INT64",
    ),
    "int64 overflow": (
        post(SCALE, {"signature_name": "sample", "instances": [2**70]}),
        400,
        "seed",
    ),
    "number for string": (post(STRINGS, {"instances": [5]}), 400, "DT_STRING"),
    "ragged lists": (
        post(SCALE, {"inputs": {"x": [[1, 2, 3], [1, 2]], "temperature": [1, 1]}}),
        400,
        "rectangular",
    ),
    "wrong shape": (
        post(SCALE, {"inputs": {"x": [[1, 2, 3, 4]], "temperature": [1]}}),
        400,
        "[-1,3]",
    ),
    "row missing input": (post(SCALE, {"instances": [{"x": [1, 2, 3]}]}), 400, "temperature"),
    "row extra input": (
        post(SCALE, {"instances": [{"x": [1, 2, 3], "temperature": 1, "z": 1}]}),
        400,
        "'z'",
    ),
    "columnar missing input": (post(SCALE, {"inputs": {"x": [[1, 2, 3]]}}), 400, "temperature"),
    "columnar extra input": (post(COUNTER, {"inputs": {"x": [1], "z": [1]}}), 400, "'z'"),
    "plain list for several inputs": (post(SCALE, {"instances": [[1, 2, 3]]}), 400, "several"),
    "bad base64": (
        post(STRINGS, {"signature_name": "decode", "instances": [{"b64": "%%%"}]}),
        400,
        "base64",
    ),
    "value out of range": (
        post(SCALE, {"inputs": {"x": [[1, 2, 3]], "temperature": [5]}}),
        400,
        "temperature: must be in [0, 2]",
    ),
    "unknown v1 path": (get("/v1/foo"), 400, MALFORMED),
    "POST to a status URL": (post("/v1/models/counter", {"instances": [1]}), 400, MALFORMED),
    "GET on a predict URL": (get(COUNTER), 400, MALFORMED),
    "DELETE a model": (("DELETE", "/v1/models/counter", None, None), 400, MALFORMED),
    "version not a number": (get("/v1/models/counter/versions/one"), 400, MALFORMED),
    "status without model": (get("/v1/models"), 400, "model name"),
    "status of unknown model": (get("/v1/models/nope"), 404, "nope"),
    "metadata of unknown version": (get("/v1/models/counter/versions/9/metadata"), 404, "9"),
    "not the REST API": (get("/index.html"), 404, "/v1/models/"),
    "classify": (post("/v1/models/counter:classify", {"examples": []}), 501, "predict"),
}


@pytest.mark.parametrize("case", sorted(REST_BAD))
def test_bad_rest_requests(http, server, case):
    (method, path, body, raw), status, needle = REST_BAD[case]
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    reply = http.request(method, server.rest + path, data=data, timeout=10)
    assert reply.status_code == status, reply.text
    assert reply.headers["Content-Type"] == "application/json"
    error = reply.json()["error"]
    assert needle in error, error


def test_oversized_rest_body_is_refused(http, server):
    body = b'{"instances": [' + b"0," * (MAX_MESSAGE_MB * 1024 * 1024 // 2) + b"0]}"
    reply = http.post(f"{server.rest}/v1/models/counter:predict", data=body, timeout=30)
    assert reply.status_code == 413
    assert "--max_message_mb" in reply.json()["error"]


def test_server_keeps_answering_after_bad_requests(predictions, http, server):
    response = predictions.Predict(predict_request("counter", {"x": np.float32([1])}), timeout=10)
    assert outputs(response)["y"].tolist() == [2.0]
    reply = http.post(f"{server.rest}/v1/models/counter:predict", json={"instances": [1.0]})
    assert reply.json() == {"predictions": [{"version": 1, "y": 2.0}]}


# -- monitoring ------------------------------------------------------------------------------


def test_prometheus_metrics_count_requests_per_model_version_signature_status(http, server):
    http.post(f"{server.rest}/v1/models/counter:predict", json={"instances": [1.0]})
    page = http.get(server.rest + METRICS_PATH, timeout=10)
    assert page.status_code == 200
    samples = [
        sample for family in text_string_to_metric_families(page.text) for sample in family.samples
    ]

    def value(name, **labels):
        return sum(
            s.value for s in samples if s.name == name and labels.items() <= s.labels.items()
        )

    ok = {"model": "counter", "version": "1", "signature": "serving_default", "status": "OK"}
    assert value("genpipe_serving_requests_total", **ok, api="Predict", protocol="rest") >= 1
    assert value("genpipe_serving_requests_total", **ok, api="Predict", protocol="grpc") >= 1
    refused = {"model": "scale", "protocol": "grpc", "status": "INVALID_ARGUMENT"}
    assert value("genpipe_serving_requests_total", **refused) >= 3
    assert value("genpipe_serving_requests_total", model="nope", status="NOT_FOUND") >= 1
    assert value("genpipe_serving_request_latency_seconds_count", **ok, protocol="rest") >= 1
    assert value("genpipe_serving_request_latency_seconds_bucket", **ok, le="+Inf") >= 1
    available = {"model": "labeled", "version": "2", "state": "AVAILABLE"}
    assert value("genpipe_serving_model_version_available", **available) == 1.0
    # Only the configured path serves metrics.
    assert http.get(server.rest + "/monitoring/prometheus/metrics").status_code == 404


# -- versions on disk ------------------------------------------------------------------------


def test_new_version_takes_over_without_failed_requests(server, exports, http, channel, models):
    """8 clients (4 gRPC, 4 REST) call `counter` while version 2 is pushed."""
    stop = threading.Event()
    seen: list[list[int]] = [[] for _ in range(8)]
    failures: list[str] = []
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def client(index: int) -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                if index < 4:
                    response = stub.Predict(
                        predict_request("counter", {"x": np.float32([1])}), timeout=10
                    )
                    version = response.model_spec.version.value
                    assert outputs(response)["version"].tolist() == [version]
                else:
                    reply = session.post(
                        f"{server.rest}/v1/models/counter:predict",
                        json={"instances": [1.0]},
                        timeout=10,
                    )
                    assert reply.status_code == 200, reply.text
                    (prediction,) = reply.json()["predictions"]
                    version = prediction["version"]
                    assert prediction["y"] == 1.0 + version
                seen[index].append(version)
            except Exception as error:  # noqa: BLE001 - every failure is recorded
                failures.append(f"client {index}: {error!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(seen), what="every client answered")
        toy_models.push(exports["counter2"], server.root / "counter", 2)
        wait_until(lambda: all(s and s[-1] == 2 for s in seen), what="clients on version 2")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:5]
    for versions in seen:
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions)  # never back to 1 after 2 answered
    assert sum(len(s) for s in seen) > 40
    wait_until(lambda: status_of(models, "counter").get(1, ("",))[0] == "END", what="v1 unload")
    assert status_of(models, "counter") == {2: ("AVAILABLE", 0, ""), 1: ("END", 0, "")}


def test_half_written_version_is_never_loaded(server, exports, predictions, models):
    partial = server.root / "counter" / "3"
    partial.mkdir()
    (partial / "variables").mkdir()
    for item in (exports["counter2"] / "variables").iterdir():
        (partial / "variables" / item.name).write_bytes(item.read_bytes())
    time.sleep(POLL_SECONDS * 6)
    assert 3 not in status_of(models, "counter")
    response = predictions.Predict(predict_request("counter", {"x": np.float32([0])}))
    assert response.model_spec.version.value == 2


def test_corrupt_version_is_reported_and_previous_keeps_serving(server, predictions, models):
    broken = server.root / "counter" / "4"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    wait_until(lambda: 4 in status_of(models, "counter"), what="version 4 reported")
    state, code, message = wait_until(
        lambda: status_of(models, "counter")[4][0] == "END" and status_of(models, "counter")[4],
        what="version 4 load ends",
    )
    assert code != 0 and message
    for _ in range(3):
        response = predictions.Predict(predict_request("counter", {"x": np.float32([0])}))
        assert response.model_spec.version.value == 2
    assert status_of(models, "counter")[2][0] == "AVAILABLE"


# -- live config reload ----------------------------------------------------------------------


def test_reload_config_moves_labels_and_models_live(server, models, predictions, http):
    def reload(text: str) -> None:
        request = model_management_pb2.ReloadConfigRequest(config=parse_config(text))
        response = models.HandleReloadConfigRequest(request, timeout=60)
        assert response.status.error_code == 0

    root = server.root
    reload(config_text(root, {"stable": 2, "canary": 1}, drop=("strings",)))
    request = predict_request("labeled", {"x": np.float32([0])}, label="stable")
    assert predictions.Predict(request).model_spec.version.value == 2
    with pytest.raises(grpc.RpcError) as caught:
        predictions.Predict(predict_request("strings", {"text": np.array([b"a"], dtype=object)}))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert status_of(models, "strings") == {1: ("END", 0, "")}

    with pytest.raises(grpc.RpcError) as caught:  # a label on a version that is not loaded
        reload(config_text(root, {"stable": 7}))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 7" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=10)
    assert caught.value.code() == INVALID
    duplicated = config_text(root, {}).replace("model_config_list { ", "model_config_list { " + (
        f'config {{ name: "scale" base_path: "{root / "scale"}" }} '
    ))  # fmt: skip
    with pytest.raises(grpc.RpcError) as caught:
        reload(duplicated)
    assert caught.value.code() == INVALID and "multiple times" in caught.value.details()

    reload(config_text(root, {"stable": 1, "canary": 2}))  # back to the start
    reply = http.post(f"{server.rest}/v1/models/strings:predict", json={"instances": ["x"]})
    assert reply.json() == {"predictions": [{"upper": "X", "length": 1}]}


# -- shutdown (keep last) --------------------------------------------------------------------


def test_sigterm_shuts_down_gracefully(server):
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    server.wait_for("stopped", timeout=10)
    assert "Traceback" not in "".join(server.log)
