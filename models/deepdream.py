"""DeepDream (Deep Learning with Python, 2nd ed., section 12.2) as one TensorFlow graph.

Gradient ascent on an image to maximize the activations of a few InceptionV3 layers, run at
successively larger scales ("octaves") with the detail lost by downscaling reinjected after each
octave. Unlike the chapter, where a Python loop drives a compiled step, the octave loop and the
step loop are ``tf.while_loop``s, so a whole dream is a single call of an exported signature.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import tensorflow as tf

from contracts import deepdream as contract
from models import image_codec, pretrained, saved_model

__all__ = [
    "CONTROL_RANGES",
    "DEFAULT_LAYER_WEIGHTS",
    "DeepDream",
    "build_deepdream",
    "export_deepdream",
]

# The chapter's layer contributions.
DEFAULT_LAYER_WEIGHTS = {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5}
# Allowed values of the per-request controls (the contract's); `iterations`' maximum is fixed
# at export.
CONTROL_RANGES = {
    name: contract.DREAM.input(name).bounds({})
    for name in ("octaves", "octave_scale", "step", "max_loss")
}


class DeepDream(tf.Module):
    """The chapter's DeepDream with every loop inside the graph; `dream` is the signature."""

    def __init__(
        self,
        extractor: keras.Model,
        layer_weights: Mapping[str, float] = DEFAULT_LAYER_WEIGHTS,
        max_pixels: int = contract.LIMITS["max_pixels"],
        max_iterations: int = contract.LIMITS["max_iterations"],
        max_batch_size: int = contract.LIMITS["max_batch_size"],
    ):
        super().__init__(name="deepdream")
        self.extractor = extractor
        self.layer_weights = dict(layer_weights)
        self._max_pixels = int(max_pixels)
        self._max_iterations = int(max_iterations)
        self._max_batch_size = int(max_batch_size)
        # Saved with the model so clients and tools can read the limits fixed at export.
        self.max_pixels = tf.Variable(self._max_pixels, trainable=False, dtype=tf.int64)
        self.max_iterations = tf.Variable(self._max_iterations, trainable=False, dtype=tf.int32)

    def limits(self) -> dict[str, int]:
        """The limits of the `dream` signature fixed at export (`contracts.deepdream.LIMITS`)."""
        return {
            "max_pixels": self._max_pixels,
            "max_iterations": self._max_iterations,
            "max_batch_size": self._max_batch_size,
        }

    def compute_loss(self, image: tf.Tensor) -> tf.Tensor:
        """Weighted mean squared activation of the chosen layers, border pixels excluded."""
        features = self.extractor(image, training=False)
        loss = tf.zeros(())
        for name, coeff in self.layer_weights.items():
            activation = features[name]
            scaling = tf.reduce_prod(tf.cast(tf.shape(activation), tf.float32))
            loss += coeff * tf.reduce_sum(tf.square(activation[:, 2:-2, 2:-2, :])) / scaling
        return loss

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, None, None, 3], tf.float32),
            tf.TensorSpec([], tf.float32),
        ],
        # Called from the step loop rather than inlined into it: inlined into a tf.while_loop
        # body, the same step ran ~20% slower on about half of the loads (oneDNN, TF 2.16,
        # 2 cores; a per-load lottery). As its own function it runs like the chapter's step.
        experimental_attributes={"_noinline": True},
    )
    def gradient_ascent_step(
        self, image: tf.Tensor, step: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One step along the L2-normalized gradient of the loss; returns (loss, image)."""
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = self.compute_loss(image)
        grads = tf.math.l2_normalize(tape.gradient(loss, image))
        return loss, image + step * grads

    def gradient_ascent_loop(
        self, image: tf.Tensor, iterations: tf.Tensor, step: tf.Tensor, max_loss: tf.Tensor
    ) -> tf.Tensor:
        """Up to `iterations` ascent steps; stops after the loss exceeds `max_loss` (if > 0)."""

        def keep_going(i, image, loss):
            return (i < iterations) & ((max_loss <= 0.0) | (loss <= max_loss))

        def ascend(i, image, loss):
            loss, image = self.gradient_ascent_step(image, step)
            return i + 1, image, loss

        _, image, _ = tf.while_loop(keep_going, ascend, (tf.constant(0), image, tf.zeros(())))
        return image

    def dream_image(
        self,
        image: tf.Tensor,
        iterations: tf.Tensor,
        octaves: tf.Tensor,
        octave_scale: tf.Tensor,
        step: tf.Tensor,
        max_loss: tf.Tensor,
    ) -> tf.Tensor:
        """One uint8 image [H, W, 3] -> its dream, uint8 [H, W, 3] of the same size.

        Refused before any octave is computed when one would exceed max_pixels (images with a
        short side under MIN_OCTAVE_SIDE are scaled up: `contracts.deepdream.largest_octave`).
        """
        original_shape = tf.shape(image)[:2]

        def octave_shape(k: tf.Tensor) -> tf.Tensor:
            size = tf.cast(original_shape, tf.float32)
            factor = tf.maximum(
                1.0 / octave_scale ** tf.cast(k, tf.float32),
                contract.MIN_OCTAVE_SIDE / tf.reduce_min(size),
            )
            return tf.cast(size * factor, tf.int32)

        shapes = tf.map_fn(octave_shape, tf.range(octaves), fn_output_signature=tf.int32)
        pixels = tf.reduce_prod(tf.cast(shapes, tf.int64), axis=1)
        octaves_fit = tf.debugging.Assert(
            tf.reduce_max(pixels) <= self._max_pixels,
            [
                f"image: every octave of the dream must have at most max_pixels = "
                f"{self._max_pixels} pixels (octaves are at least {contract.MIN_OCTAVE_SIDE} px "
                "on the short side); got an octave of height, width",
                shapes[tf.argmax(pixels)],
            ],
            name="check_image_octave_pixels",
        )
        with tf.control_dependencies([octaves_fit]):
            original = pretrained.preprocess_inception(image)[tf.newaxis]

        def one_octave(i, dream, shrunk_original):
            shape = octave_shape(octaves - 1 - i)
            dream = tf.image.resize(dream, shape)
            dream = self.gradient_ascent_loop(dream, iterations, step, max_loss)
            # Reinject the detail that the smaller octave lost.
            upscaled_shrunk_original = tf.image.resize(shrunk_original, shape)
            same_size_original = tf.image.resize(original, shape)
            dream += same_size_original - upscaled_shrunk_original
            return i + 1, dream, same_size_original

        any_image = tf.TensorShape([1, None, None, 3])
        _, dream, _ = tf.while_loop(
            lambda i, *_: i < octaves,
            one_octave,
            (tf.constant(0), original, tf.image.resize(original, octave_shape(octaves - 1))),
            shape_invariants=(tf.TensorShape([]), any_image, any_image),
        )
        dream = tf.image.resize(dream, original_shape)  # identity unless octaves were scaled up
        return tf.cast(tf.round(pretrained.deprocess_inception(dream[0])), tf.uint8)

    def _dream_encoded(self, args: tuple[tf.Tensor, ...]) -> tf.Tensor:
        data, *controls = args
        image = image_codec.decode_image(data, 3, self._max_pixels, name="image")
        return image_codec.encode_png(self.dream_image(image, *controls))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image"),
            tf.TensorSpec([None], tf.int32, name="iterations"),
            tf.TensorSpec([None], tf.int32, name="octaves"),
            tf.TensorSpec([None], tf.float32, name="octave_scale"),
            tf.TensorSpec([None], tf.float32, name="step"),
            tf.TensorSpec([None], tf.float32, name="max_loss"),
        ]
    )
    def dream(self, image, iterations, octaves, octave_scale, step, max_loss):
        """Serving signature: encoded images [B] and per-example controls [B] -> PNG [B]."""
        controls = {
            "iterations": iterations,
            "octaves": octaves,
            "octave_scale": octave_scale,
            "step": step,
            "max_loss": max_loss,
        }
        checks = [
            image_codec.check_batch_sizes({"image": image, **controls}),
            image_codec.check_batch_limit(image, "image", self._max_batch_size, "max_batch_size"),
        ]
        checks.append(image_codec.check_in_range(iterations, "iterations", 1, self._max_iterations))
        for name, (low, high) in CONTROL_RANGES.items():
            checks.append(image_codec.check_in_range(controls[name], name, low, high))
        with tf.control_dependencies(checks):
            dreams = tf.map_fn(
                self._dream_encoded,
                (image, iterations, octaves, octave_scale, step, max_loss),
                fn_output_signature=tf.TensorSpec([], tf.string),
            )
        return {"image_bytes": dreams}


def build_deepdream(
    weights: str | os.PathLike | None = "imagenet",
    layer_weights: Mapping[str, float] | None = None,
    max_pixels: int = contract.LIMITS["max_pixels"],
    max_iterations: int = contract.LIMITS["max_iterations"],
    fold_batch_norm: bool = True,
    max_batch_size: int = contract.LIMITS["max_batch_size"],
) -> DeepDream:
    """A `DeepDream` module on an InceptionV3 feature extractor (see `pretrained` for weights).

    ``fold_batch_norm`` merges each batch norm into its convolution (`pretrained.fold_batch_norm`):
    the same function of the image, ~9% less work per step.
    """
    layer_weights = dict(layer_weights or DEFAULT_LAYER_WEIGHTS)
    extractor = pretrained.feature_extractor("inception_v3", list(layer_weights), weights=weights)
    if fold_batch_norm:
        extractor = pretrained.fold_batch_norm(extractor)
    return DeepDream(extractor, layer_weights, max_pixels, max_iterations, max_batch_size)


def export_deepdream(
    export_dir: str | os.PathLike,
    weights: str | os.PathLike | None = "imagenet",
    layer_weights: Mapping[str, float] | None = None,
    max_pixels: int = contract.LIMITS["max_pixels"],
    max_iterations: int = contract.LIMITS["max_iterations"],
    module: DeepDream | None = None,
    max_batch_size: int = contract.LIMITS["max_batch_size"],
) -> dict[str, object]:
    """Write a SavedModel with the `dream` signature; returns the contract sidecar."""
    module = module or build_deepdream(
        weights, layer_weights, max_pixels, max_iterations, max_batch_size=max_batch_size
    )
    return saved_model.save(
        module,
        export_dir,
        {"dream": module.dream},
        contract=contract.CONTRACT,
        limits=module.limits(),
        info={"layer_weights": module.layer_weights},
    )
