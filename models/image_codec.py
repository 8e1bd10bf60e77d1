"""Image bytes in and out of serving graphs, with validation that names the offending input.

Every function is plain TensorFlow (standard ops only), so it runs eagerly and inside exported
signatures that the real TensorFlow Serving loads. Failed checks raise ``InvalidArgumentError``
whose message starts with the input's name and states what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import tensorflow as tf

__all__ = [
    "check_batch_limit",
    "check_batch_sizes",
    "check_in_range",
    "decode_image",
    "encode_png",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_HEADER_BYTES = 24  # PNG: 8 signature + 4 length + "IHDR" + 4 width + 4 height


def check_in_range(values: tf.Tensor, name: str, minimum: float, maximum: float) -> tf.Operation:
    """Assert every value lies in [minimum, maximum] (NaN fails); returns the assert op."""
    ok = tf.reduce_all((values >= minimum) & (values <= maximum))
    message = f"{name} must be in [{minimum}, {maximum}]; got"
    op_name = "check_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
    return tf.debugging.Assert(ok, [message, values], summarize=8, name=op_name)


def check_batch_sizes(inputs: Mapping[str, tf.Tensor]) -> tf.Operation:
    """Assert all inputs share one leading batch size (the signature's [B])."""
    names = list(inputs)
    sizes = tf.stack([tf.shape(inputs[n], out_type=tf.int64)[0] for n in names])
    ok = tf.reduce_all(tf.equal(sizes, sizes[0]))
    message = f"inputs {', '.join(names)} must have the same batch size [B]; got"
    return tf.debugging.Assert(ok, [message, sizes], name="check_batch_sizes")


def check_batch_limit(
    values: tf.Tensor, name: str, maximum: int, limit_name: str
) -> tf.Operation:
    """Assert the batch (leading dimension) of ``values`` is at most ``maximum``, the limit
    ``limit_name``; returns the assert op."""
    size = tf.shape(values, out_type=tf.int64)[0]
    message = f"{name}: batch size must be at most {limit_name} = {maximum}; got"
    return tf.debugging.Assert(size <= maximum, [message, size], name=f"check_{name}_batch")


def _header_size(data: tf.Tensor, is_png: tf.Tensor, name: str) -> tf.Tensor:
    """(height, width) int64 read from the PNG IHDR chunk or the JPEG frame header."""

    def png_size() -> tf.Tensor:
        header = tf.strings.substr(tf.strings.join([data, b"\0" * _HEADER_BYTES]), 16, 8)
        digits = tf.reshape(tf.cast(tf.io.decode_raw(header, tf.uint8), tf.int64), [2, 4])
        width_height = tf.reduce_sum(digits * tf.constant([2**24, 2**16, 2**8, 1], tf.int64), 1)
        return tf.reverse(width_height, [0])

    def jpeg_size() -> tf.Tensor:
        with tf.name_scope(name):  # a corrupt header's error then names the input's node
            return tf.io.extract_jpeg_shape(data, output_type=tf.int64)[:2]

    return tf.cond(is_png, png_size, jpeg_size)


def decode_image(
    data: tf.Tensor,
    channels: int = 3,
    max_pixels: int = 2**22,
    name: str = "image",
    min_side: int = 1,
) -> tf.Tensor:
    """One PNG or JPEG (scalar string) -> uint8 [H, W, channels], validated before decoding.

    Rejects bytes that are not PNG/JPEG, images with more than ``max_pixels`` pixels (read from
    the header, so oversized images are never decompressed) and sides shorter than ``min_side``.
    """
    padded = tf.strings.join([data, b"\0" * _HEADER_BYTES])
    is_png = tf.logical_and(
        tf.equal(tf.strings.substr(padded, 0, 8), _PNG_SIGNATURE),
        tf.equal(tf.strings.substr(padded, 12, 4), b"IHDR"),
    )
    is_jpeg = tf.equal(tf.strings.substr(padded, 0, 3), _JPEG_SIGNATURE)
    known = tf.debugging.Assert(
        is_png | is_jpeg,
        [f"{name} must be PNG or JPEG bytes; got other data of length", tf.strings.length(data)],
        name=f"check_{name}_format",
    )
    with tf.control_dependencies([known]):
        height_width = _header_size(data, is_png, name)
    small_enough = tf.debugging.Assert(
        tf.reduce_all(height_width >= min_side) & (tf.reduce_prod(height_width) <= max_pixels),
        [
            f"{name} must have at most {max_pixels} pixels and sides of at least {min_side}; "
            "got height, width",
            height_width,
        ],
        name=f"check_{name}_pixels",
    )
    with tf.control_dependencies([small_enough]), tf.name_scope(name):
        image = tf.io.decode_image(data, channels=channels, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def encode_png(images: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, C] -> PNG bytes (scalar), or uint8 [B, H, W, C] -> PNG bytes [B]."""
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise TypeError(f"encode_png expects uint8 images, got {images.dtype.name}")
    if images.shape.rank == 3:
        return tf.io.encode_png(images)
    return tf.map_fn(tf.io.encode_png, images, fn_output_signature=tf.string)
