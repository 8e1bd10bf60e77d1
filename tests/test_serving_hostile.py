"""Hostile sizes (issue 13): requests that declare more than they carry, batches over a
contract's limit, and tiny images a signature enlarges, refused before anything is allocated.

The declared-size class runs against a `python -m serving serve` subprocess on toy models, so
its memory can be read from /proc and a regression kills that process, not the tests. The
batch and pixel classes use the DeepDream and style transfer versions the smoke pipelines push.
"""

from __future__ import annotations

import base64
import resource
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import session_path
import tensorflow as tf
import toy_models
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from test_serving import Server, free_port
from test_serving_flags import parse

import contracts
from serving import cli, request_limits
from serving.server import ModelServer, ServerOptions, build_manager

MAX_TENSOR_ELEMENTS = 1_000_000  # below the default, so the tests also see the flag applied
MAX_STRING_BYTES = 1 << 20
ALLOWED_PEAK_GROWTH = 64 << 20  # bytes; every unchecked variant below allocates >= 96 MiB
QUICK = 5.0  # seconds: a refusal happens before any work


def _status_bytes(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status (VmHWM, VmSize, ...), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _peak_from_now(pid: int) -> int:
    """Reset the process's peak resident memory (VmHWM) to its current size; returns it."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_bytes(pid, "VmHWM")


def _proto(dtype: int, shape: list[int], **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def _request(model: str, signature: str, **inputs: tensor_pb2.TensorProto):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, proto in inputs.items():
        request.inputs[name].CopyFrom(proto)
    return request


def _refused(stub, request) -> str:
    """The message of an INVALID_ARGUMENT answer, which must come quickly."""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert time.monotonic() - started < QUICK
    return caught.value.details()


# -- declared sizes: a subprocess server on toy models ----------------------------------------


class LatentDecoder(tf.Module):
    """Stands in for `vae`'s `decode` (z [B, D] float32), without a contract sidecar."""

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="z")])
    def decode(self, z):
        return {"total": tf.reduce_sum(z, axis=1)}

    def signatures(self) -> dict:
        return {"decode": self.decode}


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_models")
    toy_models.export_and_push(LatentDecoder(), root / "vae", 1)
    toy_models.export_and_push(toy_models.StringsModel(), root / "strings", 1)
    grpc_port, rest_port = free_port(), free_port()
    server = Server(
        [
            "--models_root", str(root),
            "--port", str(grpc_port),
            "--rest_api_port", str(rest_port),
            "--file_system_poll_wait_seconds", "0",
            "--max_message_mb", "8",
            "--max_tensor_elements", str(MAX_TENSOR_ELEMENTS),
            "--max_string_bytes", str(MAX_STRING_BYTES),
        ]
    )  # fmt: skip
    server.wait_for("genpipe model server:")
    # Should a check regress, the 16 GiB allocation fails in the server instead of exhausting
    # the machine's memory (2 GiB of headroom for threads and ordinary requests).
    room = _status_bytes(server.process.pid, "VmSize") + (2 << 30)
    resource.prlimit(server.process.pid, resource.RLIMIT_AS, (room, room))
    server.grpc = f"127.0.0.1:{grpc_port}"
    server.rest = f"http://127.0.0.1:{rest_port}"
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def toy_stub(toy_server):
    with grpc.insecure_channel(toy_server.grpc) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _decode(z: tensor_pb2.TensorProto):
    return _request("vae", "decode", z=z)


def _decode_works(stub) -> None:
    z = np.arange(6, dtype=np.float32).reshape(2, 3)
    response = stub.Predict(_decode(tf.make_tensor_proto(z)), timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["total"]), [3, 12])


FLOAT, STRING = types_pb2.DT_FLOAT, types_pb2.DT_STRING
HUGE_ROWS = 1 << 23  # z [HUGE_ROWS, 3]: 96 MiB of float32 once decoded
# Issue 13's "37-byte request" (38 bytes serialized here): 16 GiB once decoded.
THE_37_BYTES = _decode(_proto(FLOAT, [2147483648, 2]))

# (what, request, words the refusal must contain)
DECLARED = [
    (
        "the 37-byte request: [2147483648, 2] and no values",
        THE_37_BYTES,
        ["'z'", "4294967296 elements", str(MAX_TENSOR_ELEMENTS), "--max_tensor_elements"],
    ),
    (
        "no values, a moderate shape",
        _decode(_proto(FLOAT, [HUGE_ROWS, 3])),
        ["'z'", "--max_tensor_elements"],
    ),
    (
        "one value broadcast",
        _decode(_proto(FLOAT, [HUGE_ROWS, 3], float_val=[1.0])),
        ["'z'", "--max_tensor_elements"],
    ),
    (
        "a dimension over the limit with a 0 beside it",
        _decode(_proto(FLOAT, [2**62, 0])),
        ["'z'", "dimension of 4611686018427387904", "--max_tensor_elements"],
    ),
    (
        "a negative dimension",
        _decode(_proto(FLOAT, [-5, 3], float_val=[1.0])),
        ["'z'", "negative dimension"],
    ),
    (
        "tensor_content far too short",
        _decode(_proto(FLOAT, [HUGE_ROWS, 3], tensor_content=b"\0" * 24)),
        ["'z'", "--max_tensor_elements"],
    ),
    (
        "tensor_content shorter than its small shape",
        _decode(_proto(FLOAT, [2, 3], tensor_content=b"\0" * 20)),
        ["'z'", "tensor_content has 20 bytes", "needs 6 x 4 = 24"],
    ),
    (
        "tensor_content longer than its shape",
        _decode(_proto(FLOAT, [2, 3], tensor_content=b"\0" * 28)),
        ["'z'", "tensor_content has 28 bytes"],
    ),
    (
        "more values than the shape holds",
        _decode(_proto(FLOAT, [2, 3], float_val=[1.0] * 7)),
        ["'z'", "7 values in float_val", "6 elements"],
    ),
    (
        "a string over --max_string_bytes",
        _request(
            "strings", "serving_default",
            text=_proto(STRING, [1], string_val=[b"a" * (MAX_STRING_BYTES + 1)]),
        ),  # fmt: skip
        ["'text'", f"{MAX_STRING_BYTES + 1} bytes", "--max_string_bytes"],
    ),
    (
        "a 1 KiB string repeated 500,000 times (500 MiB decoded)",
        _request(
            "strings", "serving_default",
            text=_proto(STRING, [500_000], string_val=[b"a" * 1024]),
        ),  # fmt: skip
        ["512000000 bytes", "'text'", "--max_request_bytes"],
    ),
]


def test_declared_sizes_are_refused_before_anything_is_allocated(toy_server, toy_stub):
    assert len(THE_37_BYTES.SerializeToString()) == 38
    _decode_works(toy_stub)
    peak = _peak_from_now(toy_server.process.pid)
    for what, request, words in DECLARED:
        message = _refused(toy_stub, request)
        for word in words:
            assert word in message, (what, message)
    assert toy_server.process.poll() is None, "the server died"
    growth = _status_bytes(toy_server.process.pid, "VmHWM") - peak
    assert growth < ALLOWED_PEAK_GROWTH, f"peak memory grew by {growth >> 20} MiB"
    _decode_works(toy_stub)


def _post(server, model: str, body) -> requests.Response:
    url = f"{server.rest}/v1/models/{model}:predict"
    data = body if isinstance(body, bytes) else None
    return requests.post(url, data=data, json=None if data else body, timeout=60)


def test_rest_requests_over_the_limits_get_400(toy_server):
    rows = MAX_TENSOR_ELEMENTS // 3 + 1
    decode = {"signature_name": "decode"}
    image = base64.b64encode(b"a" * (MAX_STRING_BYTES + 1)).decode()
    cases = [
        ("vae", {**decode, "inputs": [[0, 0, 0]] * rows},
         ["'z'", f"{rows * 3} elements", "--max_tensor_elements"]),
        ("vae", {**decode, "inputs": [[[[[[[[[1.0]]]]]]]]]},
         ["'z'", "9 dimensions", "--max_tensor_rank"]),
        ("vae", b'{"signature_name": "decode", "inputs": ' + b"[" * 100_000 + b"]" * 100_000
         + b"}", ["nested too deeply", "--max_tensor_rank"]),
        ("strings", {"instances": [{"b64": image}]}, ["'text'", "--max_string_bytes"]),
    ]  # fmt: skip
    for model, body, words in cases:
        answer = _post(toy_server, model, body)
        assert answer.status_code == 400, answer.text[:300]
        for word in words:
            assert word in answer.json()["error"], answer.text[:300]
    answer = _post(toy_server, "vae", {**decode, "inputs": [[1, 2, 3]]})
    assert answer.status_code == 200 and answer.json()["outputs"] == [6.0], answer.text


def test_limits_are_genpipe_serve_flags():
    args = parse("--models_root", ".", "--max_tensor_elements=5", "--default_max_batch_size", "2")
    limits = cli._request_limits(args)
    assert (limits.max_tensor_elements, limits.default_max_batch_size) == (5, 2)
    assert limits.max_request_bytes == request_limits.DEFAULTS.max_request_bytes
    with pytest.raises(ValueError, match="--max_request_bytes must be positive"):
        request_limits.configure(request_limits.RequestLimits(max_request_bytes=0))
    assert request_limits.current() == request_limits.DEFAULTS


# -- contract limits: the versions the smoke pipelines push -----------------------------------


def _png(height: int, width: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def _dream_inputs(image: bytes, rows: int = 1, octaves: int = 1) -> dict[str, np.ndarray]:
    """``rows`` copies of a cheap dream of ``image`` (one step per octave)."""
    values = {
        **contracts.deepdream.DREAM.defaults(), "image": image, "iterations": 1, "octaves": octaves
    }  # fmt: skip
    return {
        tensor.name: np.full(rows, values[tensor.name], object if tensor.dtype == "string"
                             else tensor.dtype)
        for tensor in contracts.deepdream.DREAM.inputs
    }  # fmt: skip


def _latest(base: Path) -> Path:
    return max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.fixture(scope="module")
def pushed(dream_style_smoke_root) -> dict[str, Path]:
    return {
        name: _latest(dream_style_smoke_root.serving_dir(name))
        for name in ("deepdream", "style_transfer")
    }


@pytest.fixture(scope="module")
def dream_signature(pushed):
    """The pushed `dream` signature on the session path, no server in between: its own checks."""
    return session_path.signatures(pushed["deepdream"])["dream"]


@pytest.fixture(scope="module")
def image_server(dream_style_smoke_root):
    """An in-process server on the smoke root: deepdream and style_transfer."""
    server = ModelServer(
        build_manager(models_root=str(dream_style_smoke_root.serving_dir("deepdream").parent)),
        ServerOptions(port=0, rest_api_port=free_port(), workers=2),
    )
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    server.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    server.rest = f"http://127.0.0.1:{server.rest_port}"
    yield server
    channel.close()
    server.stop()


def _dream_request(inputs: dict[str, np.ndarray], rows: int | None = None):
    """A dream request; with ``rows``, each input carries its first value, declared [rows]
    (TensorFlow repeats it)."""
    protos = {
        name: tf.make_tensor_proto(array[0], shape=[rows]) if rows else tf.make_tensor_proto(array)
        for name, array in inputs.items()
    }
    return _request("deepdream", "dream", **protos)


def test_a_batch_over_the_exports_limit_is_refused_before_running(image_server, pushed):
    limit = contracts.read_sidecar(pushed["deepdream"])["limits"]["max_batch_size"]
    photo = _png(101, 151)
    # One small request asking for 1,000 dreams: each input one value, declared [1000].
    message = _refused(image_server.stub, _dream_request(_dream_inputs(photo), rows=1000))
    assert "a batch of 1000 rows is over max_batch_size" in message and str(limit) in message
    assert "exported with" in message
    # style_transfer's contract sets no batch limit: the server's default applies.
    rows = request_limits.DEFAULTS.default_max_batch_size + 1
    instance = {
        **contracts.style_transfer.TRANSFER.defaults(), "iterations": 1, "height": 32,
        "content": {"b64": base64.b64encode(photo).decode()},
        "style": {"b64": base64.b64encode(photo).decode()},
    }  # fmt: skip
    started = time.monotonic()
    answer = _post(image_server, "style_transfer", {"signature_name": "transfer",
                                                    "instances": [instance] * rows})
    assert answer.status_code == 400, answer.text[:300]
    assert "max_batch_size" in answer.json()["error"]
    assert "--default_max_batch_size" in answer.json()["error"]
    assert time.monotonic() - started < QUICK
    response = image_server.stub.Predict(_dream_request(_dream_inputs(photo, rows=2)), timeout=120)
    assert len(tf.make_ndarray(response.outputs["image_bytes"])) == 2


def test_the_graph_refuses_a_batch_over_its_limit(pushed, dream_signature):
    """The in-graph check, for servers that do not read the sidecar (the real TF Serving)."""
    limit = contracts.read_sidecar(pushed["deepdream"])["limits"]["max_batch_size"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"max_batch_size = {limit}"):
        dream_signature(**_dream_inputs(_png(8, 8), rows=limit + 1))


def test_a_tiny_wide_png_that_octaves_enlarge_is_refused(image_server, pushed, dream_signature):
    max_pixels = contracts.read_sidecar(pushed["deepdream"])["limits"]["max_pixels"]
    wide = _png(1, 300)  # 300 pixels; its octaves are 139 x 41700
    assert 300 <= max_pixels < 139 * 41700
    message = _refused(image_server.stub, _dream_request(_dream_inputs(wide, octaves=8)))
    assert "139x41700" in message and f"max_pixels = {max_pixels}" in message
    answer = _post(image_server, "deepdream", {
        "signature_name": "dream",
        "instances": [{**contracts.deepdream.DREAM.defaults(),
                       "image": {"b64": base64.b64encode(wide).decode()}}],
    })  # fmt: skip
    assert answer.status_code == 400 and "max_pixels" in answer.json()["error"], answer.text
    # The graph's own check (a 1x60 PNG: were it missing, one step at 139x8340 is cheap).
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most max_pixels"):
        dream_signature(**_dream_inputs(_png(1, 60)))
