"""TFX Trainer `run_fn` of the fast style network: fit on content crops for one style, export.

Settings come from the Trainer's `custom_config` (`FastStyleSettings`); the number of steps is
the Trainer's `train_args.num_steps`. Outputs:
- `fn_args.serving_model_dir`: SavedModel with the `stylize` signature
  (`models.fast_style.export_fast_style`);
- `fn_args.model_run_dir`: TensorBoard loss scalars and `metrics.json` (train and held-out
  perceptual losses, style image used).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tfx.dsl.io import fileio

from components.common.config import settings_from_config
from components.fast_style.settings import FastStyleSettings
from contracts.fast_style import model_name
from models.fast_style import DOWNSAMPLING, export_fast_style, train_fast_style
from sources import photos

STYLE_HELP = (f"a painting name ({', '.join(photos.PAINTINGS)}), a texture "
              f"({', '.join(photos.TEXTURES)}) or an image file path")
METRICS_FILE = "metrics.json"


def check_style(style: str) -> str:
    """A style the Trainer can load: a painting or texture name, or an existing image file."""
    if style in photos.PAINTINGS or style in photos.TEXTURES:
        return style
    if style and Path(style).is_file():
        return str(Path(style).resolve())
    raise ValueError(f"--style {style!r} is neither a known painting nor an image file; "
                     f"allowed: {STYLE_HELP}")


def style_name(style: str) -> str:
    """The short name in the served model's name `fast_style_<name>` (lowercase, [a-z0-9_])."""
    stem = Path(style).stem if Path(style).suffix else style
    name = "".join(c if c.isalnum() else "_" for c in stem.lower()).strip("_")
    return name or "custom"


def style_image(style: str, size: int) -> np.ndarray:
    """The style image as uint8 [H, W, 3], scaled so its longer side is `size`."""
    image = photos.painting(style)
    scale = size / max(image.shape[:2])
    shape = [max(DOWNSAMPLING, round(side * scale)) for side in image.shape[:2]]
    resized = tf.image.resize(image, shape, antialias=True)
    return tf.cast(tf.round(resized), tf.uint8).numpy()


def _parse(record: tf.Tensor) -> tf.Tensor:
    features = tf.io.parse_single_example(record, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
    })
    shape = tf.stack([features["height"], features["width"], features["channels"]])
    return tf.reshape(tf.io.decode_raw(features["image"], tf.uint8), shape)


def content_dataset(file_patterns: Sequence[str], batch_size: int,
                    shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches of uint8 content crops [B, H, W, 3] from ContentPhotoGen's GZIP TFRecords."""
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no content records match {list(file_patterns)}")
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").map(_parse)
    if shuffle_seed is not None:
        ds = ds.shuffle(1024, seed=shuffle_seed)
    return ds.batch(batch_size)


def progress_callback(steps: int, every: int = 0) -> keras.callbacks.Callback:
    """Prints the running losses about 10 times during the single long epoch."""
    every = every or max(1, steps // 10)

    def report(batch: int, logs: dict | None = None) -> None:
        if (batch + 1) % every == 0 or batch + 1 == steps:
            losses = ", ".join(f"{k} {float(v):.3f}" for k, v in sorted((logs or {}).items()))
            print(f"  step {batch + 1}/{steps}: {losses}", flush=True)

    return keras.callbacks.LambdaCallback(on_train_batch_end=report)


def write_metrics(run_dir: str, metrics: dict[str, Any]) -> None:
    """`<run_dir>/metrics.json`, on any filesystem `fileio` knows (gs://, ...)."""
    fileio.makedirs(run_dir)
    with fileio.open(os.path.join(run_dir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2)


def run_fn(fn_args: Any) -> None:
    """Trains the transformer net for `train_args.num_steps` batches and exports `stylize`."""
    settings = settings_from_config(FastStyleSettings, fn_args.custom_config)
    keras.utils.set_random_seed(settings.seed)
    style = style_image(check_style(settings.style), settings.style_size)
    train = content_dataset(fn_args.train_files, settings.batch_size, shuffle_seed=settings.seed)
    trainer = train_fast_style(
        train, style, int(fn_args.train_steps),
        weights=settings.weights, filters=settings.filters,
        num_residual_blocks=settings.num_residual_blocks,
        learning_rate=settings.learning_rate, content_weight=settings.content_weight,
        style_weight=settings.style_weight, tv_weight=settings.tv_weight,
        callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
                   progress_callback(int(fn_args.train_steps))],
        verbose=0,
    )
    held_out = trainer.evaluate(content_dataset(fn_args.eval_files, settings.batch_size),
                                return_dict=True, verbose=0)
    history = {name: [float(v) for v in values] for name, values in trainer.history.history.items()}
    metrics = {
        "style": settings.style, "style_shape": list(style.shape),
        "steps": int(fn_args.train_steps),
        "train_loss": history["loss"][-1],
        **{f"eval_{name}": float(value) for name, value in held_out.items()},
    }
    write_metrics(fn_args.model_run_dir, metrics)
    limits = export_fast_style(
        trainer, fn_args.serving_model_dir, settings.max_pixels, model_name(settings.style)
    )["limits"]
    logging.info("Exported the fast style network for %s (limits %s, held-out loss %.3f) to %s",
                 settings.style, limits, metrics["eval_loss"], fn_args.serving_model_dir)
