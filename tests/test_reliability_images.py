"""Hostile images (issue 13) to every image-taking signature the smoke pipelines push
(deepdream `dream`, style_transfer `transfer`, fast_style `stylize`): decompression bombs (a
PNG IHDR or JPEG SOF declaring a huge size), a truncated file, a non-image and an image over
the export's pixel limit are refused by the server before the session runs, INVALID_ARGUMENT
naming the input; grayscale and 16-bit PNGs are accepted (the graphs convert them to RGB).
"""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from test_serving import free_port

import contracts
from serving import image_headers
from serving.config import ModelServerConfig
from serving.server import ModelServer, ServerOptions, build_manager

QUICK = 5.0  # seconds: a refusal happens before any work
FAST_STYLE = "fast_style_scream"
# (model, signature contract, cheap settings) of every image-taking signature pushed.
SIGNATURES = [
    ("deepdream", contracts.deepdream.DREAM, {"iterations": 1, "octaves": 1}),
    ("style_transfer", contracts.style_transfer.TRANSFER, {"iterations": 1, "height": 32}),
    (FAST_STYLE, contracts.fast_style.STYLIZE, {}),
]
IMAGE_INPUTS = [
    (model, signature, settings, tensor.name)
    for model, signature, settings in SIGNATURES
    for tensor in signature.inputs
    if tensor.dtype == "string"
]


def _png(height: int, width: int, mode: str = "RGB") -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    if mode == "I;16":  # 16-bit grayscale
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    else:
        image = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(height: int, width: int) -> bytes:
    """A 100-byte PNG whose IHDR declares height x width (its pixel data: one zlib stream)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 1024))
    return image_headers.PNG_SIGNATURE + body + _chunk(b"IEND", b"")


def jpeg_bomb(height: int, width: int) -> bytes:
    """A real small JPEG with its frame header (SOF0) rewritten to height x width."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "JPEG")
    data = bytearray(out.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _big_png(pixels: int) -> bytes:
    """A real grayscale PNG just over ``pixels`` (zeros compress to a few KB)."""
    side = int(pixels**0.5) + 1
    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(dream_style_smoke_root, fast_style_smoke_root):
    config = ModelServerConfig()
    for name, root in (("deepdream", dream_style_smoke_root),
                       ("style_transfer", dream_style_smoke_root),
                       (FAST_STYLE, fast_style_smoke_root)):  # fmt: skip
        config.model_config_list.config.add(name=name, base_path=str(root.serving_dir(name)))
    server = ModelServer(
        build_manager(config=config, poll_wait_seconds=0),
        ServerOptions(port=0, rest_api_port=free_port(), workers=2),
    )
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    server.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    server.rest = f"http://127.0.0.1:{server.rest_port}"
    server.limits = {
        name: contracts.read_sidecar(root.serving_dir(name) / _latest(root.serving_dir(name)))[
            "limits"]
        for name, root in (("deepdream", dream_style_smoke_root),
                           ("style_transfer", dream_style_smoke_root),
                           (FAST_STYLE, fast_style_smoke_root))
    }  # fmt: skip
    yield server
    channel.close()
    server.stop(grace=1)


def _latest(base) -> str:
    return str(max(int(p.name) for p in base.iterdir() if p.name.isdigit()))


def _inputs(signature, settings: dict, images: dict[str, bytes]) -> dict[str, np.ndarray]:
    values = {**signature.defaults(), **settings}
    good = _png(48, 64)
    return {
        tensor.name: np.array(
            [images.get(tensor.name, good) if tensor.dtype == "string" else values[tensor.name]],
            dtype=object if tensor.dtype == "string" else tensor.dtype,
        )
        for tensor in signature.inputs
    }


def _request(model: str, signature, inputs: dict[str, np.ndarray]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature.name
    for name, array in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def _hostile(limits: dict) -> list[tuple[str, bytes, list[str]]]:
    """(what, image bytes, words the refusal must hold) for an export's limits."""
    over = _big_png(int(limits["max_pixels"]))
    return [
        ("PNG bomb 50000x50000", png_bomb(50_000, 50_000),
         ["PNG header declares 50000x50000", "max_pixels", "before decoding"]),
        ("JPEG bomb 60000x60000", jpeg_bomb(60_000, 60_000),
         ["JPEG header declares 60000x60000", "max_pixels", "before decoding"]),
        ("truncated PNG", _png(48, 64)[:300], ["truncated"]),
        ("truncated JPEG", jpeg_bomb(16, 16)[:-40], ["truncated"]),
        ("not an image", b"GIF89a definitely not a PNG", ["PNG or JPEG", "GIF89a"]),
        ("empty", b"", ["PNG or JPEG", "0 bytes"]),
        ("over max_pixels", over, ["max_pixels", "before decoding"]),
    ]  # fmt: skip


@pytest.mark.parametrize("model, signature, settings, name", IMAGE_INPUTS,
                         ids=[f"{m}-{n}" for m, _, _, n in IMAGE_INPUTS])  # fmt: skip
def test_hostile_images_are_refused_before_the_session(server, model, signature, settings, name):
    for what, data, words in _hostile(server.limits[model]):
        request = _request(model, signature, _inputs(signature, settings, {name: data}))
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.Predict(request, timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, caught.value)
        assert time.monotonic() - started < QUICK, what
        message = caught.value.details()
        assert f"input '{name}'" in message, (what, message)
        for word in words:
            assert word in message, (what, message)


def test_rest_refuses_a_bomb_with_400(server):
    model, signature, settings, name = IMAGE_INPUTS[0]
    instance = {k: v[0] for k, v in _inputs(signature, settings, {}).items()}
    instance = {k: {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v.item()
                for k, v in instance.items()}  # fmt: skip
    instance[name] = {"b64": base64.b64encode(png_bomb(50_000, 50_000)).decode()}
    answer = requests.post(f"{server.rest}/v1/models/{model}:predict",
                           json={"signature_name": signature.name, "instances": [instance]},
                           timeout=60)  # fmt: skip
    assert answer.status_code == 400 and "before decoding" in answer.json()["error"], answer.text


@pytest.mark.parametrize("model, signature, settings", SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_grayscale_and_16_bit_pngs_are_accepted(server, model, signature, settings):
    gray, deep = _png(40, 56, "L"), _png(40, 56, "I;16")
    assert image_headers.read_header(deep).bit_depth == 16
    assert image_headers.read_header(gray).channels == 1
    names = [t.name for t in signature.inputs if t.dtype == "string"]
    images = {names[0]: gray, names[-1]: deep} if len(names) > 1 else {names[0]: gray}
    for chosen in ([images] if len(names) > 1 else [images, {names[0]: deep}]):
        response = server.stub.Predict(
            _request(model, signature, _inputs(signature, settings, chosen)), timeout=300
        )
        result = tf.io.decode_png(tf.make_ndarray(response.outputs["image_bytes"])[0])
        assert result.shape[-1] == 3  # RGB out
