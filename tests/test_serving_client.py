"""The client library, `generate` command line, status helper and `serving-config` against an
in-process server holding stand-ins built from the serving contract (`contracts`).

Each stand-in is a real SavedModel whose signatures take their keys, input names, dtypes, shapes
and in-graph range checks from the contract; only the tiny graph computing each output is
written here, and `test_stand_ins_match_the_contract` checks the served SignatureDefs against
the contract, so a contract change cannot leave the stand-ins behind.
"""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from client import GeneratedImage, ModelServerClient, ModelServerError, ServerUnavailable
from client import cli as client_cli
from contracts import (
    ANY,
    Contract,
    Signature,
    contract_for,
    deepdream,
    fast_style,
    gan,
    style_transfer,
    text_lm,
    vae,
    write_sidecar,
)
from pipeline.status import ask_server
from serving import cli as serving_cli
from serving.config import read_model_config_file
from serving.server import ModelServer, ServerOptions, build_manager
from serving.status import model_versions

REPO = Path(__file__).resolve().parents[1]
VOCAB = 5
GAN_LATENT = 4
TOO_HOT = text_lm.LIMITS["max_temperature"] + 1  # above a limit fixed at export: the server says


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- stand-ins built from the contract -------------------------------------------------------


def tf_spec(tensor) -> tf.TensorSpec:
    shape = [None if size == ANY else size for size in tensor.shape]
    return tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=tensor.name)


def range_checks(signature: Signature, inputs: Mapping[str, tf.Tensor], limits) -> list:
    """The contract's bounds as in-graph asserts, worded like the exports' ("x: must be in ...")."""
    checks = []
    for tensor in signature.inputs:
        low, high = tensor.bounds(limits)
        if low is None and high is None:
            continue
        value = inputs[tensor.name]
        ok = tf.constant(True)
        if low is not None:
            bound = tf.constant(low, value.dtype)
            ok &= tf.reduce_all(value > bound if tensor.low_open else value >= bound)
        if high is not None:
            ok &= tf.reduce_all(value <= tf.constant(high, value.dtype))
        message = f"{tensor.name}: must be in {tensor.range_text(limits)}; got"
        checks.append(tf.debugging.Assert(ok, [message, value]))
    return checks


def signature_function(signature: Signature, graph: Callable[..., dict], limits):
    """A concrete function with the contract's inputs and checks around ``graph``'s outputs."""
    names = [tensor.name for tensor in signature.inputs]

    def run(*args):
        inputs = dict(zip(names, args, strict=True))
        with tf.control_dependencies(range_checks(signature, inputs, limits)):
            inputs = {name: tf.identity(value) for name, value in inputs.items()}
        return graph(**inputs)

    specs = [tf_spec(tensor) for tensor in signature.inputs]
    return tf.function(run, input_signature=specs).get_concrete_function()


def export_stand_in(
    export_dir: Path, contract: Contract, graphs: Mapping[str, Callable], limits, model: str
) -> None:
    """Save the stand-in (every signature in ``graphs``, under all its keys) and its sidecar."""
    signatures = {}
    for signature in contract.signatures:
        if signature.name in graphs:
            function = signature_function(signature, graphs[signature.name], limits)
            signatures.update(dict.fromkeys([signature.name, *signature.also_as], function))
    write_sidecar(export_dir, contract, model, list(signatures), limits)
    tf.saved_model.save(tf.Module(), str(export_dir), signatures=signatures)


def png_batch(images: tf.Tensor) -> tf.Tensor:
    return tf.map_fn(tf.io.encode_png, images, fn_output_signature=tf.string)


def decode_one(data: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(data, channels=3, expand_animations=False)


def invert(data: tf.Tensor) -> tf.Tensor:
    return tf.io.encode_png(255 - decode_one(data))


def seeded_normal(seed: tf.Tensor, size: int) -> tf.Tensor:
    return tf.map_fn(
        lambda s: tf.random.stateless_normal([size], tf.stack([s, s])),
        seed,
        fn_output_signature=tf.float32,
    )


def text_generate(prompt, max_tokens, temperature, top_k, top_p, seed):
    continuation = tf.strings.join(
        ["words", tf.strings.as_string(max_tokens), "seed", tf.strings.as_string(seed)], " "
    )
    length = tf.reduce_max(max_tokens)
    return {
        "text": tf.strings.join([prompt, continuation], " "),
        "continuation": continuation,
        "token_ids": tf.tile(tf.range(length)[None, :], [tf.shape(prompt)[0], 1]),
        "num_tokens": max_tokens,
    }


def text_state(position, token, keys, values, prompt_ids, prompt_length, max_tokens):
    """The word-by-word stand-in: the word at continuation index i is "w<i>"."""
    index = position - prompt_length
    inside = (index >= 0) & (index < max_tokens)
    word = tf.where(inside, tf.strings.join(["w", tf.strings.as_string(index)]), "")
    state = dict(position=position, token=token, keys=keys, values=values)
    state.update(prompt_ids=prompt_ids, prompt_length=prompt_length)
    # one position a call ([B, 1] words), whatever `steps` asks: fewer is allowed
    return {**state, "index": index[:, None], "token_ids": token[:, None],
            "word": word[:, None], "done": index >= max_tokens - 1}


def text_generate_start(prompt, max_tokens, temperature, top_k, top_p, seed):
    zeros = tf.zeros_like(max_tokens)
    cache = tf.zeros([tf.shape(prompt)[0], 1, 1, 0, 1])
    return text_state(zeros, zeros, cache, cache, zeros[:, None], zeros, max_tokens)


def text_generate_step(
    max_tokens,
    temperature,
    top_k,
    top_p,
    seed,
    position,
    token,
    keys,
    values,
    prompt_ids,
    prompt_length,
    steps,
):
    return text_state(position + 1, token + 1, keys, values, prompt_ids, prompt_length, max_tokens)


def text_score(text):
    num_tokens = tf.cast(tf.strings.split(text).row_lengths(), tf.int32) - 1
    log_likelihood = -tf.cast(num_tokens, tf.float32)
    perplexity = tf.exp(-log_likelihood / tf.cast(num_tokens, tf.float32))
    return {"log_likelihood": log_likelihood, "num_tokens": num_tokens, "perplexity": perplexity}


def digits(level: tf.Tensor) -> dict:
    """28x28 digits of brightness ``level`` [B] in [0, 1], and their PNGs."""
    images = tf.tile(level[:, None, None, None], [1, 28, 28, 1])
    return {"images": images, "png_bytes": png_batch(tf.cast(tf.round(images * 255), tf.uint8))}


def vae_decode(z):  # latent size 2; a digit's brightness is sigmoid(z[0])
    return digits(tf.sigmoid(z[:, 0]))


def vae_encode(images):
    mean = tf.reduce_mean(images, axis=[1, 2, 3])
    z_mean = tf.stack([mean, -mean], axis=1)
    return {"z_mean": z_mean, "z_log_var": tf.zeros_like(z_mean)}


def vae_sample(seed):
    z = seeded_normal(seed, 2)
    return {**vae_decode(z), "z": z}


def vae_latent_grid(n, extent):
    def one(count):
        return tf.io.encode_png(tf.zeros([count * 28, count * 28, 1], tf.uint8))

    return {"png_bytes": tf.map_fn(one, n, fn_output_signature=tf.string)}


def vae_interpolate(z_a, z_b, steps):
    weights = tf.linspace(0.0, 1.0, tf.reduce_max(steps))[None, :, None]
    z = z_a[:, None, :] * (1 - weights) + z_b[:, None, :] * weights  # [B, steps, 2]
    level = tf.sigmoid(z[..., 0])
    images = tf.tile(level[..., None, None, None], [1, 1, 28, 28, 1])
    strip = tf.reshape(tf.transpose(images, [0, 2, 1, 3, 4]), [tf.shape(z)[0], 28, -1, 1])
    return {"png_bytes": png_batch(tf.cast(tf.round(strip * 255), tf.uint8)), "images": images}


def vae_edit(images, from_label, to_label, strength):
    shift = 0.1 * strength * tf.cast(to_label - from_label, tf.float32)
    return digits(tf.clip_by_value(tf.reduce_mean(images, axis=[1, 2, 3]) + shift, 0.0, 1.0))


def gan_images(z):
    images = tf.tile(tf.cast(tf.sigmoid(z[:, :3]) * 255, tf.uint8)[:, None, None, :], [1, 8, 8, 1])
    return {"images": images, "png_bytes": png_batch(images)}


def dream(image, iterations, octaves, octave_scale, step, max_loss):
    return {"image_bytes": tf.map_fn(invert, image, fn_output_signature=tf.string)}


def transfer(content, style, iterations, height, content_weight, style_weight, tv_weight):
    def one(args):
        data, rows = args
        resized = tf.image.resize(decode_one(data), [rows, rows])
        return tf.io.encode_png(tf.cast(resized, tf.uint8))

    images = tf.map_fn(one, (content, height), fn_output_signature=tf.string)
    return {"image_bytes": images, "loss": tf.cast(iterations, tf.float32) * style_weight}


def stylize(image):
    return {"image_bytes": tf.map_fn(invert, image, fn_output_signature=tf.string)}


# served name -> (contract, graph of each signature, limits fixed at "export")
STAND_INS: dict[str, tuple[Contract, dict[str, Callable], dict[str, Any]]] = {
    text_lm.MODEL: (
        text_lm.CONTRACT,
        {
            "generate": text_generate,
            "generate_start": text_generate_start,
            "generate_step": text_generate_step,
            "serving_default": lambda prompt: {
                "probabilities": tf.nn.softmax(tf.zeros([tf.shape(prompt)[0], VOCAB]))
            },
            "score": text_score,
        },
        {**text_lm.LIMITS, "vocab_size": VOCAB, "sequence_length": 64, "max_prompt_tokens": 13},
    ),
    vae.MODEL: (
        vae.CONTRACT,
        {
            "decode": vae_decode,
            "encode": vae_encode,
            "sample": vae_sample,
            "latent_grid": vae_latent_grid,
            "interpolate": vae_interpolate,
            "edit": vae_edit,
        },
        vae.LIMITS,
    ),
    gan.MODEL: (
        gan.CONTRACT,
        {
            "generate": lambda seed: gan_images(seeded_normal(seed, GAN_LATENT)),
            "decode": gan_images,
        },
        gan.LIMITS,
    ),
    deepdream.MODEL: (deepdream.CONTRACT, {"dream": dream}, deepdream.LIMITS),
    style_transfer.MODEL: (style_transfer.CONTRACT, {"transfer": transfer}, style_transfer.LIMITS),
    fast_style.model_name("mosaic"): (fast_style.CONTRACT, {"stylize": stylize}, fast_style.LIMITS),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, (contract, graphs, limits) in STAND_INS.items():
        export_stand_in(root / name / "1", contract, graphs, limits, name)
    (root / "vae" / "2").mkdir()  # a version being pushed: no saved_model.pb yet
    return root


@pytest.fixture(scope="module")
def server(root):
    options = ServerOptions(port=free_port(), rest_api_port=0)
    server = ModelServer(build_manager(models_root=str(root), poll_wait_seconds=0), options)
    server.start()
    yield server
    server.stop(grace=1)


@pytest.fixture(scope="module")
def address(server):
    return f"127.0.0.1:{server.grpc_port}"


@pytest.fixture(scope="module")
def client(address):
    with ModelServerClient(address, timeout=30) as client:
        yield client


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (6, 4), (10, 20, 30)).save(path, format="JPEG", quality=100)
    return path


def closed_port_address() -> str:
    return f"127.0.0.1:{free_port()}"


def exported_signatures(signature_defs: Mapping[str, Any]) -> dict[str, dict]:
    """SignatureDefs from GetModelMetadata in the form `Contract.check_export` reads."""

    def side(infos) -> dict:
        return {
            name: (tf.as_dtype(info.dtype).name, [dim.size for dim in info.tensor_shape.dim])
            for name, info in infos.items()
        }

    return {
        key: {"inputs": side(sig.inputs), "outputs": side(sig.outputs)}
        for key, sig in signature_defs.items()
        if not key.startswith("__")  # __saved_model_init_op
    }


# -- client library --------------------------------------------------------------------------


def test_stand_ins_match_the_contract(client):
    for name in STAND_INS:
        contract_for(name).check_export(exported_signatures(client.metadata(name)))


def test_text_signatures(client):
    (first, second) = client.generate_text(
        ["this movie", "a film"], max_tokens=3, temperature=0.7, seed=[4, 5]
    )
    assert first.text == "this movie words 3 seed 4" and first.continuation == "words 3 seed 4"
    assert first.token_ids == [0, 1, 2] and first.seed == 4 and first.version == 1
    assert second.prompt == "a film" and second.seed == 5
    probabilities = client.next_token_probabilities("this movie")
    assert probabilities.shape == (1, VOCAB) and np.isclose(probabilities.sum(), 1)
    (score,) = client.score_text("a b c d")
    assert score.num_tokens == 3 and score.log_likelihood == -3.0
    assert score.perplexity == pytest.approx(np.e)


@pytest.mark.parametrize("transport", ["auto", "stream", "predict"])
def test_generate_stream(client, transport):
    """The word-by-word stand-in says "w<i>" at continuation index i (tests/test_serving_stream.py
    checks a real model's words against `generate`)."""
    words = list(client.generate_stream(["a", "b"], max_tokens=[2, 3], transport=transport))
    assert [(w.row, w.index, w.word, w.last) for w in words] == [
        (0, 0, "w0", False),
        (1, 0, "w0", False),
        (0, 1, "w1", True),
        (1, 1, "w1", False),
        (1, 2, "w2", True),
    ]


def test_typed_calls_send_the_contracts_defaults(client):
    defaults = text_lm.GENERATE.defaults()
    (generation,) = client.generate_text("x")
    assert generation.continuation == f"words {defaults['max_tokens']} seed {defaults['seed']}"
    assert generation.seed == defaults["seed"]
    side = vae.LATENT_GRID.input("n").default * 28
    assert client.vae_latent_grid().to_numpy().shape == (side, side)


def test_vae_signatures(client):
    dark, bright = client.vae_decode([[-10.0, 0.0], [10.0, 0.0]])
    assert isinstance(dark, GeneratedImage) and dark.version == 1
    assert dark.to_numpy().max() == 0 and bright.to_numpy().min() == 255
    assert bright.to_pil().size == (28, 28)
    z_mean, z_log_var = client.vae_encode(np.full([2, 28, 28, 1], 0.25, np.float32))
    np.testing.assert_allclose(z_mean, [[0.25, -0.25]] * 2)
    assert z_log_var.shape == (2, 2)
    first, again, other = client.vae_sample([3, 3, 4])
    assert first.png == again.png and first.png != other.png
    assert client.vae_latent_grid(n=4, extent=2.0).to_numpy().shape == (112, 112)
    (strip,) = client.vae_interpolate([[-10.0, 0.0]], [[10.0, 0.0]], steps=3)
    pixels = strip.to_numpy()
    assert pixels.shape == (28, 84) and pixels[:, :28].max() == 0 and pixels[:, 56:].min() == 255
    (edited,) = client.vae_edit(np.full([1, 28, 28, 1], 0.5, np.float32), to_label=3)
    assert edited.to_numpy().min() == round(255 * (0.5 + 0.1 * 3))  # from 0 to 3, strength 1


def test_gan_signatures(client):
    images = client.gan_generate([1, 2])
    assert [image.to_numpy().shape for image in images] == [(8, 8, 3)] * 2
    assert images[0].png != images[1].png
    (decoded,) = client.gan_decode(np.zeros([1, GAN_LATENT], np.float32))
    assert (decoded.to_numpy() == 127).all()


def test_image_signatures_take_paths_bytes_pil_and_numpy(client, photo, tmp_path):
    dreamed = client.dream(photo)
    original = np.asarray(Image.open(photo))
    np.testing.assert_allclose(dreamed.to_numpy(), 255 - original.astype(int), atol=2)
    from_numpy = client.fast_style(original, "mosaic")
    assert from_numpy.to_numpy().tolist() == (255 - original).tolist()
    from_pil = client.fast_style(Image.open(photo), "mosaic")
    assert from_pil.to_numpy().shape == original.shape
    height = style_transfer.MIN_SIDE
    result = client.style_transfer(photo.read_bytes(), photo, iterations=10, height=height)
    assert result.image.to_pil().size == (height, height)
    assert result.loss == pytest.approx(10 * style_transfer.TRANSFER.input("style_weight").default)
    saved = result.image.save(tmp_path / "styled.jpg")
    assert Image.open(saved).format == "JPEG"


def test_metadata_status_and_waiting(client):
    signatures = client.metadata("vae")
    assert set(vae.CONTRACT.signature_keys()) <= set(signatures)
    assert [s.state for s in client.status("vae")] == ["AVAILABLE"]
    assert client.wait_until_available("vae", timeout=5) == 1
    with pytest.raises(ModelServerError) as caught:
        client.wait_until_available("vae", version=2, timeout=0.5)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_server_errors_carry_code_and_message(client):
    """A limit fixed at export (max_temperature) is the server's to check."""
    with pytest.raises(ModelServerError) as caught:
        client.generate_text("x", temperature=TOO_HOT)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    limits = STAND_INS[text_lm.MODEL][2]
    allowed = text_lm.GENERATE.input("temperature").range_text(limits)
    assert f"temperature: must be in {allowed}" in caught.value.message
    with pytest.raises(ModelServerError) as caught:
        client.fast_style(b"not an image", "nope")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: c.generate_text("x", top_p=0.0), "top_p must be in (0, 1]; got 0.0"),
        (lambda c: c.generate_text("x", temperature=-1.0), "temperature must be in [0, max_tem"),
        (lambda c: c.vae_sample([-1]), "seed must be in [0, "),
        (lambda c: c.dream(b"x", octaves=9), "octaves must be in [1, 8]; got 9"),
        (lambda c: c.style_transfer(b"x", b"y", height=8), "height must be in [32, max_height]"),
        (lambda c: c.generate_text(["a", "b"], seed=[1, 2, 3]), "expected one value or 2 values"),
        (lambda c: c.vae_decode([0.0, 1.0]), "z must have 2 dimension(s)"),
    ],
    ids=["top_p", "temperature", "seed", "octaves", "height", "seed_count", "z_rank"],
)
def test_plain_bounds_and_shapes_are_checked_before_sending(call, message):
    """Nothing is sent: the client points at a closed port, which would raise ServerUnavailable."""
    with ModelServerClient(closed_port_address(), timeout=5) as client:
        with pytest.raises(ValueError) as caught:
            call(client)
    assert message in str(caught.value)


def test_a_down_server_raises_server_unavailable():
    address = closed_port_address()
    with ModelServerClient(address, timeout=5) as client:
        with pytest.raises(ServerUnavailable) as caught:
            client.generate_text("x")
    message = str(caught.value)
    assert f"no model server at {address}" in message and "genpipe serve" in message


def test_waiting_covers_a_server_that_is_still_starting(root):
    port = free_port()
    late = ModelServer(
        build_manager(models_root=str(root), poll_wait_seconds=0),
        ServerOptions(port=port, rest_api_port=0),
    )
    starter = threading.Timer(1.0, late.start)
    starter.start()
    try:
        with ModelServerClient(f"127.0.0.1:{port}", timeout=5) as client:
            assert client.wait_until_available("gan", timeout=60) == 1
    finally:
        starter.join()
        late.stop(grace=1)
    with ModelServerClient(closed_port_address(), timeout=5) as client:
        with pytest.raises(ServerUnavailable):
            client.wait_until_available("gan", timeout=0.5)


# -- generate command line -------------------------------------------------------------------


def test_generate_text_command(address, capsys, tmp_path):
    output = tmp_path / "texts.txt"
    argv = ["generate", "text", "this movie", "--temperature", "0.7", "--max-tokens", "5"]
    argv += ["--seed", "1", "-n", "2", "--server", address, "-o", str(output)]
    assert client_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "this movie words 5 seed 1" in out and "this movie words 5 seed 2" in out
    assert output.read_text().count("this movie") == 2


@pytest.mark.parametrize("kind, tile", [("digits", (28, 28)), ("faces", (8, 8))])
def test_generate_image_grid_commands(address, tmp_path, capsys, kind, tile):
    output = tmp_path / f"{kind}.png"
    argv = ["generate", kind, "-n", "6", "--columns", "3", "-o", str(output), "--server", address]
    assert client_cli.main(argv) == 0
    grid = Image.open(output)
    assert grid.size == (3 * tile[0] + 2 * 2, 2 * tile[1] + 2)
    assert "6 " + kind in capsys.readouterr().out


def test_generate_latent_grid_command(address, tmp_path):
    output = tmp_path / "grid.png"
    argv = ["generate", "latent-grid", "-n", "3", "-o", str(output), "--server", address]
    assert client_cli.main(argv) == 0
    assert Image.open(output).size == (84, 84)


def test_generate_dream_and_style_commands(address, photo, tmp_path):
    dream_png = tmp_path / "dream.png"
    argv = ["generate", "dream", str(photo), "-o", str(dream_png), "--server", address]
    assert client_cli.main(argv) == 0
    assert Image.open(dream_png).size == (6, 4)
    styled = tmp_path / "styled.png"
    argv = ["generate", "style", str(photo), str(photo), "-o", str(styled), "--height", "40"]
    assert client_cli.main([*argv, "--iterations", "2", "--server", address]) == 0
    assert Image.open(styled).size == (40, 40)
    fast = tmp_path / "fast.png"
    argv = ["generate", "style", str(photo), "--fast", "mosaic", "-o", str(fast)]
    assert client_cli.main([*argv, "--server", address]) == 0
    assert Image.open(fast).size == (6, 4)


def test_generate_defaults_and_help_come_from_the_contract(capsys):
    parser = argparse.ArgumentParser()
    client_cli.register(parser.add_subparsers(dest="command"))
    text = parser.parse_args(["generate", "text", "x"])
    assert {name: getattr(text, name) for name in text.controls} == {
        name: text_lm.GENERATE.input(name).default for name in text.controls
    }
    style = parser.parse_args(["generate", "style", "a.jpg", "b.jpg"])
    assert style.height == style_transfer.TRANSFER.input("height").default
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "dream", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in ("octaves", "octave_scale", "max_loss"):
        tensor = deepdream.DREAM.input(name)
        assert f"default {tensor.default}; allowed {tensor.range_text()}" in help_text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["text", "x", "--top-p", "0"], "argument --top-p: must be in (0, 1]; got 0.0"),
        (["text", "x", "--temperature", "-1"], "argument --temperature: must be in [0, max_temp"),
        (["latent-grid", "-n", "1"], "argument -n/--n: must be in [2, max_grid]; got 1"),
        (["dream", "a.jpg", "--octaves", "nine"], "argument --octaves: expected a number (int32)"),
        (["style", "a", "b", "--tv-weight", "2000"], "argument --tv-weight: must be in [0, 1000]"),
    ],
)
def test_generate_refuses_values_outside_plain_bounds(capsys, argv, message):
    with pytest.raises(SystemExit) as caught:
        client_cli.main(["generate", *argv])
    assert caught.value.code == 2 and message in capsys.readouterr().err


def test_generate_against_a_down_server_prints_one_line(capsys):
    address = closed_port_address()
    assert client_cli.main(["generate", "text", "x", "--server", address, "--timeout", "5"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"no model server at {address}" in err and "genpipe serve --models_root" in err


def test_generate_reports_refused_requests_and_bad_files(address, capsys, tmp_path):
    argv = ["generate", "text", "x", "--temperature", str(TOO_HOT), "--seed", "1"]
    assert client_cli.main([*argv, "--server", address]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "INVALID_ARGUMENT" in err and "temperature" in err
    missing = tmp_path / "missing.jpg"
    assert client_cli.main(["generate", "dream", str(missing), "--server", address]) != 0
    assert "no image file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "package, commands, absent",
    [("serving", ("serve", "serving-config"), "generate"), ("client", ("generate",), "serve")],
)
def test_python_dash_m_runs_each_command_line(package, commands, absent):
    result = subprocess.run(
        [sys.executable, "-m", package, "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    listed = {line.split()[0] for line in lines if line.startswith("    ") and line[4] != " "}
    assert set(commands) <= listed and absent not in listed


# -- status and serving-config ---------------------------------------------------------------


def test_status_lists_versions_on_disk_and_live(root, address):
    models = model_versions(root)
    assert {m.name for m in models} == set(STAND_INS)
    assert all(m.states == {} for m in models)  # the server package asks no server
    ask_server(models, address)
    vae_versions = next(m for m in models if m.name == "vae")
    assert vae_versions.complete == [1] and vae_versions.partial == [2]
    assert vae_versions.live == [1] and vae_versions.server_error is None
    down = model_versions(root)
    ask_server(down, closed_port_address(), timeout=5)
    assert all(m.live == [] and "no model server" in m.server_error for m in down)


def test_serving_config_command(root, tmp_path, capsys):
    output = tmp_path / "models.config"
    argv = ["serving-config", str(root), "-o", str(output), "--base_path", "/models"]
    assert serving_cli.main(argv) == 0
    assert f"wrote {output}: {len(STAND_INS)} model(s)" in capsys.readouterr().out
    config = read_model_config_file(output)
    paths = {m.name: m.base_path for m in config.model_config_list.config}
    assert paths == {name: f"/models/{name}" for name in STAND_INS}
    local = tmp_path / "local.config"
    assert serving_cli.main(["serving-config", str(root), "-o", str(local)]) == 0
    for model in read_model_config_file(local).model_config_list.config:
        assert Path(model.base_path) == root / model.name


def test_generated_image_helpers(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (3, 2), 9).save(buffer, format="PNG")
    image = GeneratedImage(buffer.getvalue(), version=4)
    assert image.to_numpy().tolist() == [[9, 9, 9], [9, 9, 9]]
    assert image.save(tmp_path / "a" / "b.png").read_bytes() == image.png
