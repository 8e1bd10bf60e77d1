"""The client library, `generate` command line, status helper and `serving-config` against an
in-process server holding stand-ins with the serving contract's exact signatures (DESIGN.md):
same model and signature names, input and output names, dtypes and shapes, tiny graphs."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from serving import cli, toy_models
from serving.client import ModelServerClient, ModelServerError, ServerUnavailable
from serving.config import read_model_config_file
from serving.images import GeneratedImage
from serving.server import ModelServer, ServerOptions, build_manager
from serving.status import model_versions

REPO = Path(__file__).resolve().parents[1]
VOCAB = 5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def png_batch(images: tf.Tensor) -> tf.Tensor:
    return tf.map_fn(tf.io.encode_png, images, fn_output_signature=tf.string)


def decode_one(data: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(data, channels=3, expand_animations=False)


def spec(dtype, shape=(None,)):
    return tf.TensorSpec(list(shape), dtype)


class TextLM(tf.Module):
    @tf.function(
        input_signature=[
            spec(tf.string),
            spec(tf.int32),
            spec(tf.float32),
            spec(tf.int32),
            spec(tf.float32),
            spec(tf.int64),
        ]
    )
    def generate(self, prompt, max_tokens, temperature, top_k, top_p, seed):
        tf.debugging.assert_less_equal(temperature, 2.0, message="temperature: must be in [0, 2]")
        continuation = tf.strings.join(
            ["words", tf.strings.as_string(max_tokens), "seed", tf.strings.as_string(seed)], " "
        )
        length = tf.reduce_max(max_tokens)
        token_ids = tf.tile(tf.range(length)[None, :], [tf.shape(prompt)[0], 1])
        return {
            "text": tf.strings.join([prompt, continuation], " "),
            "continuation": continuation,
            "token_ids": token_ids,
            "num_tokens": max_tokens,
        }

    @tf.function(input_signature=[spec(tf.string)])
    def next_token(self, prompt):
        logits = tf.zeros([tf.shape(prompt)[0], VOCAB])
        return {"probabilities": tf.nn.softmax(logits)}

    @tf.function(input_signature=[spec(tf.string)])
    def score(self, text):
        words = tf.strings.split(text).row_lengths()
        num_tokens = tf.cast(words, tf.int32) - 1
        log_likelihood = -tf.cast(num_tokens, tf.float32)
        return {
            "log_likelihood": log_likelihood,
            "num_tokens": num_tokens,
            "perplexity": tf.exp(-log_likelihood / tf.cast(num_tokens, tf.float32)),
        }

    def signatures(self):
        return {
            "generate": self.generate,
            "serving_default": self.next_token,
            "score": self.score,
        }


class VAE(tf.Module):
    """Latent size 2; the digit's brightness is sigmoid(z[0])."""

    def _decoded(self, z):
        level = tf.sigmoid(z[:, 0])
        images = tf.tile(level[:, None, None, None], [1, 28, 28, 1])
        return {"images": images, "png": png_batch(tf.cast(images * 255, tf.uint8))}

    @tf.function(input_signature=[spec(tf.float32, (None, 2))])
    def decode(self, z):
        return self._decoded(z)

    @tf.function(input_signature=[spec(tf.float32, (None, 28, 28, 1))])
    def encode(self, images):
        mean = tf.reduce_mean(images, axis=[1, 2, 3])
        z_mean = tf.stack([mean, -mean], axis=1)
        return {"z_mean": z_mean, "z_log_var": tf.zeros_like(z_mean)}

    @tf.function(input_signature=[spec(tf.int64)])
    def sample(self, seed):
        z = tf.map_fn(
            lambda s: tf.random.stateless_normal([2], tf.stack([s, s])),
            seed,
            fn_output_signature=tf.float32,
        )
        return {**self._decoded(z), "z": z}

    @tf.function(input_signature=[spec(tf.int32), spec(tf.float32)])
    def latent_grid(self, n, extent):
        def one(args):
            count, _ = args
            return tf.io.encode_png(tf.zeros([count * 28, count * 28, 1], tf.uint8))

        return {"png": tf.map_fn(one, (n, extent), fn_output_signature=tf.string)}

    def signatures(self):
        return {
            "decode": self.decode,
            "encode": self.encode,
            "sample": self.sample,
            "latent_grid": self.latent_grid,
        }


class GAN(tf.Module):
    def _images(self, z):
        pixels = tf.cast(tf.sigmoid(z[:, :3]) * 255, tf.uint8)
        images = tf.tile(pixels[:, None, None, :], [1, 8, 8, 1])
        return {"images": images, "png": png_batch(images)}

    @tf.function(input_signature=[spec(tf.int64)])
    def generate(self, seed):
        z = tf.map_fn(
            lambda s: tf.random.stateless_normal([4], tf.stack([s, s])),
            seed,
            fn_output_signature=tf.float32,
        )
        return self._images(z)

    @tf.function(input_signature=[spec(tf.float32, (None, 4))])
    def decode(self, z):
        return self._images(z)

    def signatures(self):
        return {"serving_default": self.generate, "generate": self.generate, "decode": self.decode}


def invert(data):
    return tf.io.encode_png(255 - decode_one(data))


class DeepDream(tf.Module):
    @tf.function(
        input_signature=[spec(tf.string), spec(tf.int32), spec(tf.int32)] + [spec(tf.float32)] * 3
    )
    def dream(self, image, iterations, octaves, octave_scale, step, max_loss):
        return {"image": tf.map_fn(invert, image, fn_output_signature=tf.string)}

    def signatures(self):
        return {"dream": self.dream}


class StyleTransfer(tf.Module):
    @tf.function(
        input_signature=[spec(tf.string), spec(tf.string), spec(tf.int32), spec(tf.int32)]
        + [spec(tf.float32)] * 3
    )
    def transfer(self, content, style, iterations, height, content_weight, style_weight, tv_weight):
        def one(args):
            data, rows = args
            resized = tf.image.resize(decode_one(data), [rows, rows])
            return tf.io.encode_png(tf.cast(resized, tf.uint8))

        images = tf.map_fn(one, (content, height), fn_output_signature=tf.string)
        return {"image": images, "loss": tf.cast(iterations, tf.float32) * style_weight}

    def signatures(self):
        return {"transfer": self.transfer}


class FastStyle(tf.Module):
    @tf.function(input_signature=[spec(tf.string)])
    def stylize(self, image):
        return {"image": tf.map_fn(invert, image, fn_output_signature=tf.string)}

    def signatures(self):
        return {"stylize": self.stylize}


CONTRACT = {
    "text_lm": TextLM,
    "vae": VAE,
    "gan": GAN,
    "deepdream": DeepDream,
    "style_transfer": StyleTransfer,
    "fast_style_mosaic": FastStyle,
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, module in CONTRACT.items():
        toy_models.export_and_push(module(), root / name, 1)
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


# -- client library --------------------------------------------------------------------------


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


def test_vae_signatures(client):
    dark, bright = client.vae_decode([[-10.0, 0.0], [10.0, 0.0]])
    assert isinstance(dark, GeneratedImage) and dark.version == 1
    assert dark.to_numpy().max() == 0 and bright.to_numpy().min() == 254
    assert bright.to_pil().size == (28, 28)
    z_mean, z_log_var = client.vae_encode(np.full([2, 28, 28, 1], 0.25, np.float32))
    np.testing.assert_allclose(z_mean, [[0.25, -0.25]] * 2)
    assert z_log_var.shape == (2, 2)
    first, again, other = client.vae_sample([3, 3, 4])
    assert first.png == again.png and first.png != other.png
    grid = client.vae_latent_grid(n=4, extent=2.0)
    assert grid.to_numpy().shape == (112, 112)


def test_gan_signatures(client):
    images = client.gan_generate([1, 2])
    assert [image.to_numpy().shape for image in images] == [(8, 8, 3)] * 2
    assert images[0].png != images[1].png
    (decoded,) = client.gan_decode(np.zeros([1, 4], np.float32))
    assert (decoded.to_numpy() == 127).all()


def test_image_signatures_take_paths_bytes_pil_and_numpy(client, photo, tmp_path):
    dreamed = client.dream(photo)
    original = np.asarray(Image.open(photo))
    np.testing.assert_allclose(dreamed.to_numpy(), 255 - original.astype(int), atol=2)
    from_numpy = client.fast_style(original, "mosaic")
    assert from_numpy.to_numpy().tolist() == (255 - original).tolist()
    from_pil = client.fast_style(Image.open(photo), "mosaic")
    assert from_pil.to_numpy().shape == original.shape
    result = client.style_transfer(photo.read_bytes(), photo, iterations=10, height=16)
    assert result.image.to_pil().size == (16, 16)
    assert result.loss == pytest.approx(10 * 1e-6)
    saved = result.image.save(tmp_path / "styled.jpg")
    assert Image.open(saved).format == "JPEG"


def test_metadata_status_and_waiting(client):
    signatures = client.metadata("vae")
    assert {"decode", "encode", "sample", "latent_grid"} <= set(signatures)
    assert [s.state for s in client.status("vae")] == ["AVAILABLE"]
    assert client.wait_until_available("vae", timeout=5) == 1
    with pytest.raises(ModelServerError) as caught:
        client.wait_until_available("vae", version=2, timeout=0.5)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_server_errors_carry_code_and_message(client):
    with pytest.raises(ModelServerError) as caught:
        client.generate_text("x", temperature=5.0)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature" in caught.value.message
    with pytest.raises(ModelServerError) as caught:
        client.fast_style(b"not an image", "nope")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_a_down_server_raises_server_unavailable():
    address = closed_port_address()
    with ModelServerClient(address, timeout=5) as client:
        with pytest.raises(ServerUnavailable) as caught:
            client.generate_text("x")
    message = str(caught.value)
    assert f"no model server at {address}" in message and "genpipe serve" in message


def test_waiting_covers_a_server_that_is_still_starting(root):
    port = free_port()
    late = ModelServer(build_manager(models_root=str(root), poll_wait_seconds=0),
                       ServerOptions(port=port, rest_api_port=0))
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
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "this movie words 5 seed 1" in out and "this movie words 5 seed 2" in out
    assert output.read_text().count("this movie") == 2


@pytest.mark.parametrize("kind, tile", [("digits", (28, 28)), ("faces", (8, 8))])
def test_generate_image_grid_commands(address, tmp_path, capsys, kind, tile):
    output = tmp_path / f"{kind}.png"
    argv = ["generate", kind, "-n", "6", "--columns", "3", "-o", str(output), "--server", address]
    assert cli.main(argv) == 0
    grid = Image.open(output)
    assert grid.size == (3 * tile[0] + 2 * 2, 2 * tile[1] + 2)
    assert "6 " + kind in capsys.readouterr().out


def test_generate_dream_and_style_commands(address, photo, tmp_path):
    dream = tmp_path / "dream.png"
    assert cli.main(["generate", "dream", str(photo), "-o", str(dream), "--server", address]) == 0
    assert Image.open(dream).size == (6, 4)
    styled = tmp_path / "styled.png"
    argv = ["generate", "style", str(photo), str(photo), "-o", str(styled), "--height", "12"]
    assert cli.main([*argv, "--iterations", "2", "--server", address]) == 0
    assert Image.open(styled).size == (12, 12)
    fast = tmp_path / "fast.png"
    argv = ["generate", "style", str(photo), "--fast", "mosaic", "-o", str(fast)]
    assert cli.main([*argv, "--server", address]) == 0
    assert Image.open(fast).size == (6, 4)


def test_generate_against_a_down_server_prints_one_line(capsys):
    address = closed_port_address()
    assert cli.main(["generate", "text", "x", "--server", address, "--timeout", "5"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"no model server at {address}" in err and "genpipe serve --models_root" in err


def test_generate_reports_refused_requests_and_bad_files(address, capsys, tmp_path):
    argv = ["generate", "text", "x", "--temperature", "9", "--seed", "1", "--server", address]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "INVALID_ARGUMENT" in err and "temperature" in err
    missing = tmp_path / "missing.jpg"
    assert cli.main(["generate", "dream", str(missing), "--server", address]) != 0
    assert "no image file" in capsys.readouterr().err


def test_python_dash_m_serving_runs_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("serve", "serving-config", "generate"):
        assert command in result.stdout


# -- status and serving-config ---------------------------------------------------------------


def test_status_lists_versions_on_disk_and_live(root, address):
    by_name = {m.name: m for m in model_versions(root, address)}
    assert set(by_name) == set(CONTRACT)
    vae = by_name["vae"]
    assert vae.complete == [1] and vae.partial == [2] and vae.live == [1]
    assert vae.server_error is None
    down = model_versions(root, closed_port_address(), timeout=5)
    assert all(m.live == [] and "no model server" in m.server_error for m in down)
    assert model_versions(root)[0].states == {}


def test_serving_config_command(root, tmp_path, capsys):
    output = tmp_path / "models.config"
    argv = ["serving-config", str(root), "-o", str(output), "--base_path", "/models"]
    assert cli.main(argv) == 0
    assert f"wrote {output}: 6 model(s)" in capsys.readouterr().out
    config = read_model_config_file(output)
    paths = {m.name: m.base_path for m in config.model_config_list.config}
    assert paths == {name: f"/models/{name}" for name in CONTRACT}
    local = tmp_path / "local.config"
    assert cli.main(["serving-config", str(root), "-o", str(local)]) == 0
    for model in read_model_config_file(local).model_config_list.config:
        assert Path(model.base_path) == root / model.name


def test_generated_image_helpers(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (3, 2), 9).save(buffer, format="PNG")
    image = GeneratedImage(buffer.getvalue(), version=4)
    assert image.to_numpy().tolist() == [[9, 9, 9], [9, 9, 9]]
    assert image.save(tmp_path / "a" / "b.png").read_bytes() == image.png
