"""Neural style transfer of Gatys et al. (Deep Learning with Python, 2nd ed., section 12.3).

The image is optimized directly: VGG19 content loss on ``block5_conv2``, style loss on Gram
matrices of ``block1..5_conv1``, a total-variation loss, and plain SGD with the chapter's
exponentially decaying learning rate. The iterations run in a ``tf.while_loop``, so a whole
transfer is one call of the exported ``transfer`` signature.

One change from the chapter: the learning rate is scaled by the image area relative to the
chapter's 400x600 image. The per-pixel gradient grows as the image shrinks, and the chapter's
rate of 100 makes small previews (e.g. height 128) diverge to NaN within 5 steps; at the
chapter's size the schedule is the chapter's. The content features and style Gram
matrices are computed once, before the loop (the chapter recomputes them at every step; the
result is the same).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from contracts import style_transfer as contract
from models import image_codec, pretrained, saved_model

__all__ = [
    "CHAPTER_WEIGHTS",
    "CONTENT_LAYER",
    "STYLE_LAYERS",
    "StyleTransfer",
    "build_style_transfer",
    "content_loss",
    "export_style_transfer",
    "gram_matrix",
    "learning_rate",
    "style_loss",
    "total_variation_loss",
]

CONTENT_LAYER = "block5_conv2"
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
# The chapter's loss weights: the contract's defaults of the `transfer` inputs.
CHAPTER_WEIGHTS = {
    name: contract.TRANSFER.input(name).default
    for name in ("content_weight", "style_weight", "tv_weight")
}
# SGD learning rate 100 * 0.96 ** (step / 100), the chapter's Keras ExponentialDecay, for an
# image of REFERENCE_PIXELS; scaled in proportion to the image area (see the module docstring).
LEARNING_RATE = keras.optimizers.schedules.ExponentialDecay(
    initial_learning_rate=100.0, decay_steps=100, decay_rate=0.96
)
REFERENCE_PIXELS = 400 * 600
MIN_SIDE = contract.MIN_SIDE
WEIGHT_RANGE = contract.WEIGHT_RANGE


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Feature map [H, W, C] -> Gram matrix [C, C] of channel correlations."""
    flat = tf.reshape(features, [-1, tf.shape(features)[-1]])
    return tf.matmul(flat, flat, transpose_a=True)


def learning_rate(step: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    """The chapter's decaying SGD rate, scaled by ``pixels / REFERENCE_PIXELS``."""
    return LEARNING_RATE(step) * tf.cast(pixels, tf.float32) / REFERENCE_PIXELS


def content_loss(base: tf.Tensor, combination: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(combination - base))


def style_loss(style_gram: tf.Tensor, combination: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """The chapter's style loss; ``size`` is the image's height * width, ``channels`` is 3."""
    channels = 3.0
    combination_gram = gram_matrix(combination)
    return tf.reduce_sum(tf.square(style_gram - combination_gram)) / (4.0 * channels**2 * size**2)


def total_variation_loss(image: tf.Tensor) -> tf.Tensor:
    """The chapter's smoothness loss on an image batch [B, H, W, C]."""
    a = tf.square(image[:, :-1, :-1, :] - image[:, 1:, :-1, :])
    b = tf.square(image[:, :-1, :-1, :] - image[:, :-1, 1:, :])
    return tf.reduce_sum(tf.pow(a + b, 1.25))


class StyleTransfer(tf.Module):
    """Gatys style transfer with the optimization loop in the graph; `transfer` is the signature."""

    def __init__(
        self,
        extractor: keras.Model,
        max_height: int = contract.LIMITS["max_height"],
        max_iterations: int = contract.LIMITS["max_iterations"],
        max_pixels: int = contract.LIMITS["max_pixels"],
        content_layer: str = CONTENT_LAYER,
        style_layers: Sequence[str] = STYLE_LAYERS,
    ):
        super().__init__(name="style_transfer")
        self.extractor = extractor
        self.content_layer = content_layer
        self.style_layers = tuple(style_layers)
        self._max_height = int(max_height)
        self._max_iterations = int(max_iterations)
        self._max_pixels = int(max_pixels)
        # Saved with the model so tools can read the limits fixed at export.
        self.max_height = tf.Variable(self._max_height, trainable=False, dtype=tf.int32)
        self.max_iterations = tf.Variable(self._max_iterations, trainable=False, dtype=tf.int32)
        self.max_pixels = tf.Variable(self._max_pixels, trainable=False, dtype=tf.int64)

    def limits(self) -> dict[str, int]:
        """The limits of `transfer` fixed at export (`contracts.style_transfer.LIMITS`)."""
        return {
            "max_height": self._max_height,
            "max_iterations": self._max_iterations,
            "max_pixels": self._max_pixels,
        }

    def compute_targets(
        self, content: tf.Tensor, style: tf.Tensor
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        """Preprocessed content and style [1, H, W, 3] -> content features, style Grams."""
        content_features = self.extractor(content, training=False)[self.content_layer][0]
        style_features = self.extractor(style, training=False)
        style_grams = tuple(gram_matrix(style_features[name][0]) for name in self.style_layers)
        return content_features, style_grams

    def compute_loss(
        self,
        combination: tf.Tensor,
        targets: tuple[tf.Tensor, tuple[tf.Tensor, ...]],
        content_weight: tf.Tensor,
        style_weight: tf.Tensor,
        tv_weight: tf.Tensor,
    ) -> tf.Tensor:
        """Weighted content + style + total-variation loss of a preprocessed image [1, H, W, 3]."""
        content_features, style_grams = targets
        features = self.extractor(combination, training=False)
        size = tf.cast(tf.reduce_prod(tf.shape(combination)[1:3]), tf.float32)
        loss = content_weight * content_loss(content_features, features[self.content_layer][0])
        for name, style_gram in zip(self.style_layers, style_grams, strict=True):
            loss += (style_weight / len(self.style_layers)) * style_loss(
                style_gram, features[name][0], size
            )
        return loss + tv_weight * total_variation_loss(combination)

    # Called from the SGD loop rather than inlined into it (see DeepDream.gradient_ascent_step:
    # inlined into a tf.while_loop body, a step ran ~20% slower on about half of the loads).
    @tf.function(experimental_attributes={"_noinline": True})
    def loss_and_gradient(
        self,
        combination: tf.Tensor,
        targets: tuple[tf.Tensor, tuple[tf.Tensor, ...]],
        content_weight: tf.Tensor,
        style_weight: tf.Tensor,
        tv_weight: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The loss of a preprocessed image [1, H, W, 3] and its gradient."""
        with tf.GradientTape() as tape:
            tape.watch(combination)
            loss = self.compute_loss(combination, targets, content_weight, style_weight, tv_weight)
        return loss, tape.gradient(loss, combination)

    def transfer_image(
        self,
        content: tf.Tensor,
        style: tf.Tensor,
        iterations: tf.Tensor,
        height: tf.Tensor,
        content_weight: tf.Tensor,
        style_weight: tf.Tensor,
        tv_weight: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """uint8 content and style [H, W, 3] -> (uint8 result [height, width, 3], final loss)."""
        content_shape = tf.cast(tf.shape(content)[:2], tf.float32)
        width = tf.cast(
            tf.round(content_shape[1] * tf.cast(height, tf.float32) / content_shape[0]), tf.int32
        )
        width_ok = image_codec.check_in_range(
            width, "width (content aspect ratio x height)", MIN_SIDE, 4 * self._max_height
        )
        with tf.control_dependencies([width_ok]):
            size = tf.stack([height, width])

        def prepare(image: tf.Tensor) -> tf.Tensor:
            resized = tf.image.resize(tf.cast(image, tf.float32), size, antialias=True)
            return pretrained.preprocess_vgg(resized)[tf.newaxis]

        base = prepare(content)
        targets = self.compute_targets(base, prepare(style))

        def sgd_step(i, combination, _):
            loss, grads = self.loss_and_gradient(
                combination, targets, content_weight, style_weight, tv_weight
            )
            rate = learning_rate(i, height * width)
            return i + 1, combination - rate * grads, loss

        _, combination, loss = tf.while_loop(
            lambda i, *_: i < iterations, sgd_step, (tf.constant(0), base, tf.zeros(()))
        )
        image = tf.cast(tf.round(pretrained.deprocess_vgg(combination[0])), tf.uint8)
        return image, loss

    def _transfer_encoded(self, args: tuple[tf.Tensor, ...]) -> tuple[tf.Tensor, tf.Tensor]:
        content_data, style_data, *controls = args
        content = image_codec.decode_image(content_data, 3, self._max_pixels, name="content")
        style = image_codec.decode_image(style_data, 3, self._max_pixels, name="style")
        image, loss = self.transfer_image(content, style, *controls)
        return image_codec.encode_png(image), loss

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="content"),
            tf.TensorSpec([None], tf.string, name="style"),
            tf.TensorSpec([None], tf.int32, name="iterations"),
            tf.TensorSpec([None], tf.int32, name="height"),
            tf.TensorSpec([None], tf.float32, name="content_weight"),
            tf.TensorSpec([None], tf.float32, name="style_weight"),
            tf.TensorSpec([None], tf.float32, name="tv_weight"),
        ]
    )
    def transfer(self, content, style, iterations, height, content_weight, style_weight, tv_weight):
        """Serving signature: content and style images [B] + controls [B] -> PNG [B], loss [B]."""
        inputs = {
            "content": content,
            "style": style,
            "iterations": iterations,
            "height": height,
            "content_weight": content_weight,
            "style_weight": style_weight,
            "tv_weight": tv_weight,
        }
        checks = [
            image_codec.check_batch_sizes(inputs),
            image_codec.check_in_range(iterations, "iterations", 1, self._max_iterations),
            image_codec.check_in_range(height, "height", MIN_SIDE, self._max_height),
        ]
        for name in CHAPTER_WEIGHTS:
            checks.append(image_codec.check_in_range(inputs[name], name, *WEIGHT_RANGE))
        with tf.control_dependencies(checks):
            images, losses = tf.map_fn(
                self._transfer_encoded,
                tuple(inputs.values()),
                fn_output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.float32)),
            )
        return {"image_bytes": images, "loss": losses}


def build_style_transfer(
    weights: str | os.PathLike | None = "imagenet",
    max_height: int = contract.LIMITS["max_height"],
    max_iterations: int = contract.LIMITS["max_iterations"],
    max_pixels: int = contract.LIMITS["max_pixels"],
) -> StyleTransfer:
    """A `StyleTransfer` module on a VGG19 feature extractor (see `pretrained` for weights)."""
    layers = [CONTENT_LAYER, *STYLE_LAYERS]
    extractor = pretrained.feature_extractor("vgg19", layers, weights=weights)
    return StyleTransfer(extractor, max_height, max_iterations, max_pixels)


def export_style_transfer(
    export_dir: str | os.PathLike,
    weights: str | os.PathLike | None = "imagenet",
    max_height: int = contract.LIMITS["max_height"],
    max_iterations: int = contract.LIMITS["max_iterations"],
    max_pixels: int = contract.LIMITS["max_pixels"],
    module: StyleTransfer | None = None,
) -> dict[str, object]:
    """Write a SavedModel with the `transfer` signature; returns the contract sidecar."""
    module = module or build_style_transfer(weights, max_height, max_iterations, max_pixels)
    return saved_model.save(
        module,
        export_dir,
        {"transfer": module.transfer},
        contract=contract.CONTRACT,
        limits=module.limits(),
        info={"content_layer": module.content_layer, "style_layers": list(module.style_layers)},
    )
