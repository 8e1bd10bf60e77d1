"""tf.Transform preprocessing for the image generators: raw uint8 bytes -> float32 in [0, 1].

`image` (raw bytes of a [height, width, channels] uint8 array, see `components.images.example_gen`)
becomes `image` float32 [H, W, C] = pixels / 255, with the fixed shape given by the Transform
component's `custom_config` (`image_height`, `image_width`, `image_channels`); a stored shape
that differs fails the run naming the feature. `label` passes through as int64 when present.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

IMAGE, LABEL = "image", "label"
SHAPE_SETTINGS = ("image_height", "image_width", "image_channels")


def image_shape_setting(custom_config: dict[str, Any] | None) -> tuple[int, int, int]:
    """(height, width, channels) from `custom_config`, with a clear error when missing or bad."""
    config = custom_config or {}
    shape = []
    for name in SHAPE_SETTINGS:
        value = config.get(name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"custom_config {name!r} is {value!r}; allowed: an integer >= 1")
        shape.append(value)
    return tuple(shape)


def _as_vector(values: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """One value per example: [B] from a [B, 1] dense (or sparse) feature."""
    if isinstance(values, tf.SparseTensor):
        values = tf.sparse.to_dense(values)
    return tf.reshape(values, [-1])


def scaled_images(raw: tf.Tensor, shape: tuple[int, int, int]) -> tf.Tensor:
    """Raw uint8 bytes [B] -> float32 images [B, H, W, C] in [0, 1]."""
    pixels = tf.io.decode_raw(raw, tf.uint8)
    size = shape[0] * shape[1] * shape[2]
    check = tf.debugging.assert_equal(
        tf.shape(pixels)[1], size,
        message=f"feature 'image' must hold {size} bytes ({shape[0]}x{shape[1]}x{shape[2]} uint8)",
    )
    with tf.control_dependencies([check]):
        pixels = tf.reshape(pixels, [-1, *shape])
    return tf.cast(pixels, tf.float32) / 255.0


def preprocessing_fn(
    inputs: dict[str, tf.Tensor], custom_config: dict[str, Any] | None = None
) -> dict[str, tf.Tensor]:
    """`image` -> float32 [B, H, W, C] in [0, 1]; `label` -> int64 [B] when the data has it."""
    shape = image_shape_setting(custom_config)
    outputs = {IMAGE: scaled_images(_as_vector(inputs[IMAGE]), shape)}
    if LABEL in inputs:
        outputs[LABEL] = tf.cast(_as_vector(inputs[LABEL]), tf.int64)
    return outputs
