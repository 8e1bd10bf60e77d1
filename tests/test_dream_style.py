"""DeepDream, Gatys style transfer and the fast style network, through their exported signatures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import session_path
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from models import deepdream, fast_style, style_transfer
from sources import photos

MAX_PIXELS = 200 * 300  # small export limits keep the oversized-image checks cheap


def _png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(np.asarray(image, np.uint8)).numpy()


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    resized = tf.image.resize(image, (height, width), antialias=True)
    return tf.cast(tf.round(resized), tf.uint8).numpy()


def _decode(data: tf.Tensor) -> np.ndarray:
    return tf.io.decode_png(data).numpy()


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return _resized(photos.photo("chelsea"), 101, 151)  # odd sizes on purpose


@pytest.fixture(scope="module")
def painting() -> np.ndarray:
    return photos.painting("starry_night")  # falls back to a skimage texture if not extracted


# ----------------------------------------------------------------------------- DeepDream


@pytest.fixture(scope="module")
def dream_module() -> deepdream.DeepDream:
    return deepdream.build_deepdream("packaged", max_pixels=MAX_PIXELS, max_iterations=50)


@pytest.fixture(scope="module")
def dream_export(dream_module, tmp_path_factory) -> Path:
    export_dir = tmp_path_factory.mktemp("deepdream") / "1"
    limits = deepdream.export_deepdream(export_dir, module=dream_module)["limits"]
    assert limits == {
        "max_pixels": MAX_PIXELS,
        "max_iterations": 50,
        "max_batch_size": deepdream.contract.LIMITS["max_batch_size"],
    }
    return export_dir


@pytest.fixture(scope="module")
def dream(dream_export):
    """The `dream` signature of the exported, reloaded SavedModel."""
    return session_path.signatures(dream_export)["dream"]


def _dream_request(images, iterations=3, octaves=2, octave_scale=1.4, step=20.0, max_loss=15.0):
    n = len(images)
    return {
        "image": tf.constant(images),
        "iterations": tf.constant([iterations] * n, tf.int32),
        "octaves": tf.constant([octaves] * n, tf.int32),
        "octave_scale": tf.constant([octave_scale] * n, tf.float32),
        "step": tf.constant([step] * n, tf.float32),
        "max_loss": tf.constant([max_loss] * n, tf.float32),
    }


def test_dream_loss_rises_on_a_real_photo(dream_module):
    image = tf.cast(_resized(photos.photo("astronaut"), 160, 160), tf.float32)[None] / 127.5 - 1
    step = dream_module.gradient_ascent_step
    losses = []
    for _ in range(5):
        loss, image = step(image, tf.constant(20.0))
        losses.append(float(loss))
    assert all(b > a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] > 1.5 * losses[0]


def test_dream_keeps_odd_sizes_in_one_batch_and_changes_the_image(dream, cat):
    small = _resized(photos.photo("coffee"), 77, 115)
    out = dream(**_dream_request([_png(cat), _png(small)]))["image_bytes"]
    first, second = _decode(out[0]), _decode(out[1])
    assert first.shape == cat.shape and second.shape == small.shape
    assert np.abs(first.astype(int) - cat).mean() > 3.0  # visibly dreamed, not a copy


def test_dream_is_deterministic_and_matches_the_module(dream, dream_module, cat):
    request = _dream_request([_png(cat)], iterations=2)
    first = dream(**request)["image_bytes"].numpy()
    assert dream(**request)["image_bytes"].numpy()[0] == first[0]
    # The exported graph computes what the module does. Gradient ascent is chaotic (1-ulp
    # differences between two compiled copies grow over steps), so compare one step per octave.
    one_step = _dream_request([_png(cat)], iterations=1)
    exported = _decode(dream(**one_step)["image_bytes"][0]).astype(int)
    in_memory = _decode(dream_module.dream(**one_step)["image_bytes"][0]).astype(int)
    assert np.abs(exported - in_memory).mean() < 0.5


def test_dream_max_loss_stops_early(dream, cat):
    request = _dream_request([_png(cat)], iterations=20, max_loss=1e-3)
    stopped = _decode(dream(**request)["image_bytes"][0]).astype(int)
    request = _dream_request([_png(cat)], iterations=1)
    one_step = _decode(dream(**request)["image_bytes"][0]).astype(int)
    np.testing.assert_array_equal(stopped, one_step)  # one step per octave, then the stop


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"image": [b"definitely not an image"]}, "image must be PNG or JPEG"),
        ({"iterations": [0]}, "iterations must be in"),
        ({"iterations": [51]}, "iterations must be in"),
        ({"octaves": [9]}, "octaves must be in"),
        ({"octave_scale": [0.5]}, "octave_scale must be in"),
        ({"step": [float("nan")]}, "step must be in"),
        ({"max_loss": [-1.0]}, "max_loss must be in"),
        ({"step": [1.0, 2.0]}, "same batch size"),
    ],
)
def test_dream_rejects_bad_input_naming_it(dream, cat, change, named):
    request = _dream_request([_png(cat)])
    for key, value in change.items():
        request[key] = tf.constant(value, request[key].dtype)
    with pytest.raises(tf.errors.InvalidArgumentError, match=named):
        dream(**request)


def test_dream_rejects_images_over_the_export_limit(dream):
    too_big = _png(_resized(photos.photo("chelsea"), 201, 301))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=f"image must have at most {MAX_PIXELS}"
    ):
        dream(**_dream_request([too_big]))
    jpeg = tf.io.encode_jpeg(_resized(photos.photo("chelsea"), 201, 301)).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="image must have at most"):
        dream(**_dream_request([jpeg]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="/image/"):
        dream(**_dream_request([jpeg[:200]]))  # truncated JPEG: the failing node is image/...


# ----------------------------------------------------------------------------- Gatys


@pytest.fixture(scope="module")
def gatys_module() -> style_transfer.StyleTransfer:
    return style_transfer.build_style_transfer(
        "packaged", max_height=128, max_iterations=100, max_pixels=1024 * 1024
    )


@pytest.fixture(scope="module")
def transfer_export(gatys_module, tmp_path_factory) -> Path:
    export_dir = tmp_path_factory.mktemp("style_transfer") / "1"
    style_transfer.export_style_transfer(export_dir, module=gatys_module)
    return export_dir


@pytest.fixture(scope="module")
def transfer(transfer_export):
    return session_path.signatures(transfer_export)["transfer"]


def _transfer_request(content, style, iterations=5, height=64, **weights):
    weights = {**style_transfer.CHAPTER_WEIGHTS, **weights}
    request = {
        "content": tf.constant([content]),
        "style": tf.constant([style]),
        "iterations": tf.constant([iterations], tf.int32),
        "height": tf.constant([height], tf.int32),
    }
    return request | {k: tf.constant([v], tf.float32) for k, v in weights.items()}


def test_gatys_loss_falls_tenfold_on_a_photo_and_a_painting(gatys_module, cat, painting):
    request = _transfer_request(_png(cat), _png(painting), iterations=1, height=96)
    start = float(gatys_module.transfer(**request)["loss"][0])
    request["iterations"] = tf.constant([60])
    result = gatys_module.transfer(**request)
    end = float(result["loss"][0])
    assert np.isfinite(end) and end < start / 10, (start, end)
    image = _decode(result["image_bytes"][0])
    assert image.shape == (96, round(151 * 96 / 101), 3)
    assert np.abs(image.astype(float) - _resized(cat, *image.shape[:2])).mean() > 5.0


def test_gatys_export_is_deterministic(transfer, cat, painting):
    request = _transfer_request(_png(cat), _png(painting), iterations=3)
    first = transfer(**request)
    second = transfer(**request)
    assert first["image_bytes"].numpy()[0] == second["image_bytes"].numpy()[0]
    assert first["loss"].numpy()[0] == second["loss"].numpy()[0]
    assert _decode(first["image_bytes"][0]).shape == (64, 96, 3)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"style": [b"\x89PNG\r\n\x1a\n garbage"]}, "style must be PNG or JPEG"),
        ({"content": [b""]}, "content must be PNG or JPEG"),
        ({"height": [16]}, "height must be in"),
        ({"height": [129]}, "height must be in"),
        ({"iterations": [101]}, "iterations must be in"),
        ({"style_weight": [-1.0]}, "style_weight must be in"),
        ({"tv_weight": [float("inf")]}, "tv_weight must be in"),
    ],
)
def test_gatys_rejects_bad_input_naming_it(transfer, cat, painting, change, named):
    request = _transfer_request(_png(cat), _png(painting), iterations=1)
    for key, value in change.items():
        request[key] = tf.constant(value, request[key].dtype)
    with pytest.raises(tf.errors.InvalidArgumentError, match=named):
        transfer(**request)


def _saved_functions(export_dir: Path) -> dict:
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    return {f.signature.name: f for f in saved.meta_graphs[0].graph_def.library.function}


@pytest.mark.parametrize(
    ("export", "step"),
    [("dream_export", "gradient_ascent_step"), ("transfer_export", "loss_and_gradient")],
)
def test_exported_loops_call_their_step_as_a_function(request, export, step):
    """Inlined into the while-loop body the step ran ~20% slower on some loads (benchmarks/)."""
    functions = _saved_functions(request.getfixturevalue(export))
    noinline = {name for name, f in functions.items() if f.attr["_noinline"].b}
    assert any(step in name for name in noinline), sorted(functions)
    callers = {
        name
        for name, f in functions.items()
        for node in f.node_def
        if node.op in ("PartitionedCall", "StatefulPartitionedCall")
        and node.attr["f"].func.name in noinline
    }
    assert any("while_body" in name for name in callers), callers


# ----------------------------------------------------------------------------- fast style


@pytest.fixture(scope="module")
def fast_trainer(painting):
    names = ("chelsea", "astronaut", "coffee", "rocket")
    photos_64 = np.stack([_resized(photos.photo(n), 64, 64) for n in names])
    dataset = tf.data.Dataset.from_tensor_slices(photos_64).batch(2)
    style = _resized(painting, 96, 96)
    extractor = fast_style.pretrained.feature_extractor(
        "vgg19", sorted({fast_style.CONTENT_LAYER, *fast_style.STYLE_LAYERS}), weights="packaged"
    )
    trainer = fast_style.FastStyleTrainer(
        fast_style.build_transformer_net(filters=(8, 16, 16), num_residual_blocks=1),
        extractor,
        style,
    )
    trainer.compile(optimizer=fast_style.keras.optimizers.Adam(1e-2))
    before = trainer.evaluate(dataset, verbose=0, return_dict=True)
    trainer.fit(dataset.repeat(), epochs=1, steps_per_epoch=12, verbose=0)
    after = trainer.evaluate(dataset, verbose=0, return_dict=True)
    return trainer, before, after


def test_fast_style_loss_falls(fast_trainer):
    _, before, after = fast_trainer
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert after["style_loss"] < before["style_loss"]


def test_fast_style_export_keeps_sizes_and_validates(fast_trainer, tmp_path, cat):
    trainer, *_ = fast_trainer
    limits = fast_style.export_fast_style(trainer, tmp_path / "1", max_pixels=MAX_PIXELS)["limits"]
    assert limits["max_pixels"] == MAX_PIXELS
    stylize = session_path.signatures(tmp_path / "1")["stylize"]
    tiny = _resized(cat, 5, 7)
    out = stylize(image=tf.constant([_png(cat), _png(tiny)]))["image_bytes"]
    assert _decode(out[0]).shape == cat.shape and _decode(out[1]).shape == tiny.shape
    padded = trainer.transformer(np.pad(cat, [(0, 3), (0, 1), (0, 0)], "symmetric")[None] * 1.0)
    expected = np.round(np.clip(padded[0, :101, :151].numpy(), 0, 255))
    np.testing.assert_allclose(_decode(out[0]), expected, atol=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image must be PNG or JPEG"):
        stylize(image=tf.constant([b"GIF89a"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="sides of at least 4"):
        stylize(image=tf.constant([_png(_resized(cat, 3, 40))]))
