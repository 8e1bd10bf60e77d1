"""Fast style transfer (Johnson, Alahi & Fei-Fei, 2016): one forward pass per image.

An image transformation network (strided-conv downsampling, residual blocks, upsampling, instance
normalization) is trained on content photos against a perceptual loss computed by the same VGG19
feature extractor as Gatys' method: feature reconstruction (content), Gram matrices (style) and
total variation. After training, stylizing an image is a single forward pass instead of
thousands of optimization steps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from contracts import fast_style as contract
from models import image_codec, pretrained, saved_model

__all__ = [
    "CONTENT_LAYER",
    "STYLE_LAYERS",
    "FastStyle",
    "FastStyleTrainer",
    "build_transformer_net",
    "export_fast_style",
    "gram_matrix",
    "relative_squared_error",
    "train_fast_style",
]

# The paper's VGG-16 layers relu2_2 (content) and relu1_2, relu2_2, relu3_3, relu4_3 (style),
# taken as the last conv of the same blocks in VGG19 (Keras convs include the ReLU).
CONTENT_LAYER = "block2_conv2"
STYLE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4")
DOWNSAMPLING = 4  # two stride-2 convolutions


# ----------------------------------------------------------------------------- network


def _conv_norm(x: keras.KerasTensor, filters: int, kernel_size: int, strides: int = 1):
    """Conv -> instance norm -> ReLU (GroupNormalization with one group per channel)."""
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False)(
        x
    )
    x = keras.layers.GroupNormalization(groups=-1)(x)
    return keras.layers.ReLU()(x)


def _residual_block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    shortcut = x
    x = _conv_norm(x, filters, 3)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.GroupNormalization(groups=-1)(x)
    return keras.layers.Add()([shortcut, x])


def _upsample(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    # Nearest-neighbour upsampling + conv instead of the paper's fractionally strided conv:
    # same role, without checkerboard artifacts (Odena et al., 2016).
    x = keras.layers.UpSampling2D(2, interpolation="nearest")(x)
    return _conv_norm(x, filters, 3)


def build_transformer_net(
    filters: Sequence[int] = (32, 64, 128),
    num_residual_blocks: int = 5,
    name: str = "transformer_net",
) -> keras.Model:
    """The image transformation network: RGB [0, 255] -> RGB [0, 255], any size divisible by 4.

    ``filters`` are the widths of the 9x9 input conv and the two stride-2 convs (the paper's
    32, 64, 128); the residual blocks use the last width.
    """
    small, medium, large = filters
    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = _conv_norm(x, small, 9)
    x = _conv_norm(x, medium, 3, strides=2)
    x = _conv_norm(x, large, 3, strides=2)
    for _ in range(num_residual_blocks):
        x = _residual_block(x, large)
    x = _upsample(x, medium)
    x = _upsample(x, small)
    x = keras.layers.Conv2D(3, 9, padding="same", activation="tanh")(x)
    outputs = keras.layers.Rescaling(127.5, offset=127.5, name="stylized")(x)
    return keras.Model(inputs, outputs, name=name)


# ----------------------------------------------------------------------------- perceptual loss


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Feature maps [B, H, W, C] -> Gram matrices [B, C, C] normalized by C * H * W."""
    shape = tf.shape(features)
    flat = tf.reshape(features, [shape[0], -1, shape[3]])
    norm = tf.cast(shape[1] * shape[2] * shape[3], features.dtype)
    return tf.matmul(flat, flat, transpose_a=True) / norm


def relative_squared_error(output: tf.Tensor, target: tf.Tensor, axis: list[int]) -> tf.Tensor:
    """||output - target||^2 / ||target||^2 per example.

    The paper's squared errors differ by orders of magnitude between VGG layers (here block3's
    Gram error is ~1000x block1's); dividing by the target's own norm puts every layer and the
    content term on a comparable scale, so the loss weights mean what they say.
    """
    error = tf.reduce_sum(tf.square(output - target), axis=axis)
    return error / (tf.reduce_sum(tf.square(target), axis=axis) + 1e-8)


class FastStyleTrainer(keras.Model):
    """Trains a transformer net for one style image; use with `compile()` and `fit()`.

    The dataset yields content images, float or uint8 RGB [B, H, W, 3] in [0, 255] (or tuples
    whose first item is that), with H and W divisible by 4. Metrics: loss, content_loss,
    style_loss, tv_loss (already weighted). Content and style losses are relative squared
    errors (`relative_squared_error`); the style loss averages the style layers; the TV loss is
    the mean absolute difference of neighbouring pixels in [0, 1] units.
    """

    def __init__(
        self,
        transformer: keras.Model,
        extractor: keras.Model,
        style_image: np.ndarray | tf.Tensor,
        content_weight: float = 1.0,
        style_weight: float = 5.0,
        tv_weight: float = 1.0,
        content_layer: str = CONTENT_LAYER,
        style_layers: Sequence[str] = STYLE_LAYERS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.transformer = transformer
        self.extractor = extractor
        self.extractor.trainable = False
        self.content_layer = content_layer
        self.style_layers = tuple(style_layers)
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.tv_weight = tv_weight
        style = pretrained.preprocess_vgg(tf.convert_to_tensor(style_image)[tf.newaxis])
        features = self.extractor(style, training=False)
        self.style_grams = tuple(gram_matrix(features[n]) for n in self.style_layers)
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "content_loss", "style_loss", "tv_loss")
        }

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.transformer(images, training=training)

    def compute_losses(self, content: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """Weighted perceptual losses of stylizing a batch of content images."""
        content = tf.cast(content, tf.float32)
        stylized = self.transformer(content, training=training)
        both = self.extractor(
            pretrained.preprocess_vgg(tf.concat([content, stylized], 0)), training=False
        )
        target, output = tf.split(both[self.content_layer], 2)
        content_loss = tf.reduce_mean(relative_squared_error(output, target, axis=[1, 2, 3]))
        style_loss = tf.zeros(())
        for name, style_gram in zip(self.style_layers, self.style_grams, strict=True):
            _, output = tf.split(both[name], 2)
            error = relative_squared_error(gram_matrix(output), style_gram, axis=[1, 2])
            style_loss += tf.reduce_mean(error) / len(self.style_layers)
        pixels = tf.cast(tf.reduce_prod(tf.shape(stylized)[1:]), tf.float32)
        tv_loss = tf.reduce_mean(tf.image.total_variation(stylized)) / (255.0 * pixels)
        losses = {
            "content_loss": self.content_weight * content_loss,
            "style_loss": self.style_weight * style_loss,
            "tv_loss": self.tv_weight * tv_loss,
        }
        losses["loss"] = tf.add_n(list(losses.values()))
        return losses

    def _track(self, losses: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        for name, tracker in self.trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data):
        content = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            losses = self.compute_losses(content, training=True)
        weights = self.transformer.trainable_weights
        grads = tape.gradient(losses["loss"], weights)
        self.optimizer.apply_gradients(zip(grads, weights, strict=True))
        return self._track(losses)

    def test_step(self, data):
        content = data[0] if isinstance(data, tuple) else data
        return self._track(self.compute_losses(content))


def train_fast_style(
    content_ds: tf.data.Dataset,
    style_image: np.ndarray | tf.Tensor,
    steps: int,
    *,
    weights: str | os.PathLike | None = "imagenet",
    filters: Sequence[int] = (32, 64, 128),
    num_residual_blocks: int = 5,
    learning_rate: float = 1e-3,
    content_weight: float = 1.0,
    style_weight: float = 5.0,
    tv_weight: float = 1.0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = 0,
) -> FastStyleTrainer:
    """Train a transformer net for `steps` batches of ``content_ds`` (repeated as needed).

    Returns the trainer; ``trainer.transformer`` is the network to export with
    `export_fast_style` and ``trainer.history`` the Keras history.
    """
    extractor = pretrained.feature_extractor(
        "vgg19", sorted({CONTENT_LAYER, *STYLE_LAYERS}), weights=weights
    )
    trainer = FastStyleTrainer(
        build_transformer_net(filters, num_residual_blocks),
        extractor,
        style_image,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
    )
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate))
    trainer.fit(
        content_ds.repeat(),
        epochs=1,
        steps_per_epoch=steps,
        callbacks=list(callbacks),
        verbose=verbose,
    )
    return trainer


# ----------------------------------------------------------------------------- export


class FastStyle(tf.Module):
    """Serving module of a trained transformer net; `stylize` is the signature."""

    def __init__(
        self, transformer: keras.Model, max_pixels: int = contract.LIMITS["max_pixels"]
    ):
        super().__init__(name="fast_style")
        self.transformer = transformer
        self._max_pixels = int(max_pixels)
        self.max_pixels = tf.Variable(self._max_pixels, trainable=False, dtype=tf.int64)

    def limits(self) -> dict[str, object]:
        return {"max_pixels": self._max_pixels, "min_side": DOWNSAMPLING}

    def stylize_image(self, image: tf.Tensor) -> tf.Tensor:
        """uint8 [H, W, 3] -> stylized uint8 [H, W, 3] (mirror-padded to a multiple of 4)."""
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        pad_h = -height % DOWNSAMPLING
        pad_w = -width % DOWNSAMPLING
        padded = tf.pad(
            tf.cast(image, tf.float32)[tf.newaxis],
            [[0, 0], [0, pad_h], [0, pad_w], [0, 0]],
            mode="SYMMETRIC",
        )
        stylized = self.transformer(padded, training=False)[0, :height, :width, :]
        return tf.cast(tf.round(tf.clip_by_value(stylized, 0.0, 255.0)), tf.uint8)

    def _stylize_encoded(self, data: tf.Tensor) -> tf.Tensor:
        image = image_codec.decode_image(
            data, 3, self._max_pixels, name="image", min_side=DOWNSAMPLING
        )
        return image_codec.encode_png(self.stylize_image(image))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image")])
    def stylize(self, image):
        """Serving signature: encoded images [B] -> stylized PNG [B], same sizes."""
        images = tf.map_fn(
            self._stylize_encoded, image, fn_output_signature=tf.TensorSpec([], tf.string)
        )
        return {"image_bytes": images}


def export_fast_style(
    model: keras.Model,
    export_dir: str | os.PathLike,
    max_pixels: int = contract.LIMITS["max_pixels"],
    model_name: str | None = None,
) -> dict[str, object]:
    """Write a SavedModel with the `stylize` signature for a transformer net (or its trainer);
    ``model_name`` is the served name (`fast_style_<style>`). Returns the contract sidecar."""
    transformer = model.transformer if isinstance(model, FastStyleTrainer) else model
    module = FastStyle(transformer, max_pixels)
    return saved_model.save(
        module,
        export_dir,
        {"stylize": module.stylize},
        contract=contract.CONTRACT,
        limits=module.limits(),
        model_name=model_name,
    )
