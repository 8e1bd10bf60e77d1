"""DeepDream, style transfer and the fast style network as TFX pipelines, end to end (smoke).

The pipelines run once per session through `genpipe run` (tests/fixtures_dream_style.py); the
tests read ML Metadata and the pushed SavedModels, and ask those models for real images on TF
Serving's loading path (`session_path`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from fixtures_dream_style import run_cli
from session_path import signatures

from sources import photos


def _png(image: np.ndarray) -> tf.Tensor:
    return tf.constant([tf.io.encode_png(np.asarray(image, np.uint8)).numpy()])


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    resized = tf.image.resize(image, (height, width), antialias=True)
    return tf.cast(tf.round(resized), tf.uint8).numpy()


def _only_version(serving_dir: Path) -> Path:
    versions = [p for p in serving_dir.iterdir() if p.name.isdigit()]
    assert len(versions) == 1, versions
    assert (versions[0] / "saved_model.pb").is_file()
    return versions[0]


def _decode(outputs: dict) -> np.ndarray:
    return tf.io.decode_png(outputs["image_bytes"][0]).numpy()


# ----------------------------------------------------------------------------- dream and style


def test_pushed_deepdream_dreams_on_a_real_photo(dream_style_smoke_root):
    coffee = _resized(photos.photo("coffee"), 141, 211)  # not the validation photo, odd sizes
    version = _only_version(dream_style_smoke_root.serving_dir("deepdream"))
    dream = signatures(version)["dream"]
    outputs = dream(image=_png(coffee), iterations=tf.constant([3]), octaves=tf.constant([1]),
                    octave_scale=tf.constant([1.4]), step=tf.constant([20.0]),
                    max_loss=tf.constant([0.0]))
    dreamed = _decode(outputs)
    assert dreamed.shape == coffee.shape
    assert np.abs(dreamed.astype(int) - coffee).mean() > 2.0  # gradient ascent changed it


def test_pushed_style_transfer_answers_a_photo_and_a_painting(dream_style_smoke_root):
    transfer = signatures(_only_version(dream_style_smoke_root.serving_dir("style_transfer")))[
        "transfer"]
    coffee = photos.photo("coffee")  # 400x600
    outputs = transfer(content=_png(coffee), style=_png(photos.painting("scream")),
                       iterations=tf.constant([2]), height=tf.constant([48]),
                       content_weight=tf.constant([2.5e-8]), style_weight=tf.constant([1e-6]),
                       tv_weight=tf.constant([1e-6]))
    assert _decode(outputs).shape == (48, 72, 3)
    assert np.isfinite(outputs["loss"].numpy()).all()


@pytest.mark.parametrize("pipeline_name, model_name, signature, limit", [
    ("deepdream-smoke", "deepdream", "dream", 10),
    ("style-transfer-smoke", "style_transfer", "transfer", 20),
])
def test_export_records_weights_limits_and_a_blessing(
    dream_style_smoke_root, pipeline_name, model_name, signature, limit
):
    summary = dream_style_smoke_root.summaries[pipeline_name]
    assert {run.state for run in summary.components.values()} == {"COMPLETE"}
    model = summary.output("ExportPretrainedModel", "model")
    assert model.properties["model_name"] == model_name
    assert model.properties["signature"] == signature
    assert model.properties["weights"] == "packaged"
    assert model.properties["limit_max_iterations"] == limit
    limits = json.loads((Path(model.uri) / "limits.json").read_text())
    assert limits == json.loads(model.properties["limits"])
    blessing = summary.output("ServingValidator", "blessing").properties
    assert blessing["blessed"] == 1 and blessing["current_model_id"] == model.id
    sample = tf.io.decode_png((Path(blessing["samples"]) / f"{signature}.png").read_bytes())
    assert sample.shape[-1] == 3
    assert f"serving validation: {blessing['blessing_message']}" in dream_style_smoke_root.output
    pushed = summary.output("Pusher", "pushed_model").properties
    assert pushed["pushed"] == 1
    assert Path(pushed["pushed_destination"]).parent == \
        dream_style_smoke_root.serving_dir(model_name)


def test_a_second_run_is_cached_and_pushes_no_new_version(dream_style_smoke_root):
    code, text = run_cli("run", "dream", "--profile", "smoke",
                         "--root", str(dream_style_smoke_root.root))
    assert code == 0, text
    assert "0 executed, 3 from cache" in text
    _only_version(dream_style_smoke_root.serving_dir("deepdream"))


# ----------------------------------------------------------------------------- fast style


def test_fast_style_ingests_crops_of_the_offline_photos(fast_style_smoke_root):
    summary = fast_style_smoke_root.summaries["fast-style-scream-smoke"]
    examples = summary.output("ContentPhotoGen", "examples").properties
    darknet = list((photos.assets_dir() / "photos").glob("*.jpg"))
    readable = len(photos.SKIMAGE_PHOTOS) + len(darknet)
    assert examples["photos_read"] == readable
    assert examples["train_examples"] + examples["eval_examples"] == 2 * readable  # 2 per photo
    assert examples["eval_examples"] >= 1
    assert examples["image_shape"] == "64x64x3"
    metrics = json.loads((Path(summary.output("Trainer", "model_run").uri) / "metrics.json")
                         .read_text())
    assert metrics["steps"] == 4 and metrics["style"] == "scream"
    assert np.isfinite(metrics["eval_loss"]) and metrics["eval_style_loss"] > 0


def test_pushed_fast_style_keeps_the_image_size(fast_style_smoke_root):
    version = _only_version(fast_style_smoke_root.serving_dir("fast_style_scream"))
    stylize = signatures(version)["stylize"]
    cat = photos.photo("chelsea")
    for height, width in [(101, 151), (53, 77)]:
        image = _resized(cat, height, width)
        stylized = _decode(stylize(image=_png(image)))
        assert stylized.shape == (height, width, 3)
        assert np.abs(stylized.astype(int) - image).mean() > 1.0
    blessing = fast_style_smoke_root.summaries["fast-style-scream-smoke"].output(
        "ServingValidator", "blessing")
    assert blessing.properties["blessed"] == 1


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize("argv, named", [
    (("run", "fast-style", "--style", "no_such_painting"),
     ["--style 'no_such_painting'", "starry_night", "scream", "image file path"]),
    (("run", "dream", "--style", "scream"), ["--style applies only to fast-style"]),
    (("run", "no_such_model"), ["dream", "style", "fast-style"]),
    (("run", "style", "--source", "/somewhere"), ["--source", "no training data"]),
    (("run", "fast-style", "--source", "/no/such/folder"), ["--source", "offline"]),
    (("run", "dream", "--profile", "huge"), ["--profile 'huge'", "smoke, demo, book"]),
])
def test_bad_arguments_name_the_allowed_values(tmp_path, argv, named):
    code, text = run_cli(*argv, "--root", str(tmp_path))
    assert code == 2, text
    for fragment in named:
        assert fragment in text
    assert not (tmp_path / "metadata.sqlite").exists()
