"""Tiling batches of images into one picture, and turning [0, 1] floats into PNG bytes.

Everything here is plain TensorFlow, so the same code runs eagerly (callbacks, notebooks) and
inside exported serving signatures.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf


def to_uint8(images: tf.Tensor) -> tf.Tensor:
    """Floats in [0, 1] -> uint8 in [0, 255] (rounded, out-of-range values clipped)."""
    scaled = tf.round(tf.cast(images, tf.float32) * 255.0)
    return tf.cast(tf.clip_by_value(scaled, 0.0, 255.0), tf.uint8)


def tile(images: tf.Tensor, rows: tf.Tensor | int, cols: tf.Tensor | int) -> tf.Tensor:
    """Images [rows * cols, H, W, C], row-major -> one image [rows * H, cols * W, C]."""
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    height, width, channels = shape[1], shape[2], shape[3]
    grid = tf.reshape(images, tf.stack([rows, cols, height, width, channels]))
    grid = tf.transpose(grid, [0, 2, 1, 3, 4])  # rows, H, cols, W, C
    return tf.reshape(grid, tf.stack([rows * height, cols * width, channels]))


def grid(images: tf.Tensor | np.ndarray, cols: int | None = None) -> np.ndarray:
    """A near-square grid of N images [N, H, W, C] as one array; empty cells are black."""
    images = np.asarray(images, dtype=np.float32)
    count = len(images)
    cols = cols or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    padding = np.zeros((rows * cols - count, *images.shape[1:]), np.float32)
    return tile(np.concatenate([images, padding]), rows, cols).numpy()


def encode_png(image: tf.Tensor) -> tf.Tensor:
    """One float image [H, W, C] in [0, 1] -> PNG bytes (scalar string)."""
    return tf.io.encode_png(to_uint8(image))


def save_png(path: str | os.PathLike, image: tf.Tensor | np.ndarray) -> None:
    """Write one float image [H, W, C] in [0, 1] as a PNG file (parent folders created)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tf.io.write_file(path, encode_png(tf.convert_to_tensor(image, tf.float32)))
