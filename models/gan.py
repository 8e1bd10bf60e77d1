"""The DCGAN of Deep Learning with Python, section 12.5.

A generator maps latent points to images; a discriminator tells generated images (label 1) from
real ones (label 0). Each training step first updates the discriminator on a half-real,
half-generated batch with slightly noisy labels, then updates the generator so the
discriminator calls its images real.

The book's generator starts from an 8x8 map and upsamples three times to 64x64 faces; here the
start size and the number of upsamplings follow the data (7x7 and two for 28x28 digits, 4x4 and
three for 32x32). ``width`` scales every filter count so tests can train tiny networks.

Under a mixed-precision policy both networks' outputs stay float32 (Keras' mixed-precision
guide), mixed_float16 wraps each optimizer in a LossScaleOptimizer, and the training step
reduces its losses over the global batch (`models.distributed`).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from models import image_grid
from models.distributed import global_batch_mean

__all__ = [
    "GAN",
    "GANMonitor",
    "build_discriminator",
    "build_gan",
    "build_generator",
    "upsamplings",
]

LABEL_NOISE = 0.05  # the book's trick: uniform noise added to the discriminator's labels


def _filters(count: int, width: float) -> int:
    return max(1, int(round(count * width)))


def upsamplings(image_shape: tuple[int, int, int], most: int = 3) -> int:
    """How many stride-2 upsamplings fit: the largest k <= most with H and W divisible by 2**k."""
    height, width, _ = image_shape
    for k in range(most, 0, -1):
        if height % 2**k == 0 and width % 2**k == 0:
            return k
    raise ValueError(f"image_shape {image_shape}: height and width must be even")


def build_discriminator(image_shape: tuple[int, int, int], width: float = 1.0) -> keras.Model:
    """Image -> probability it was generated: three 4x4 stride-2 convs (64, 128, 128), LeakyReLU."""
    inputs = keras.Input(shape=image_shape, name="images")
    x = inputs
    for count in (64, 128, 128):
        x = layers.Conv2D(_filters(count, width), 4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="discriminator")


def build_generator(
    image_shape: tuple[int, int, int], latent_dim: int = 128, width: float = 1.0
) -> keras.Model:
    """Latent point -> image in [0, 1]: dense start map, 4x4 stride-2 transposed convs, 5x5 conv."""
    height, image_width, channels = image_shape
    steps = upsamplings(image_shape)
    inputs = keras.Input(shape=(latent_dim,), name="z")
    start_h, start_w, start_c = height // 2**steps, image_width // 2**steps, _filters(128, width)
    x = layers.Dense(start_h * start_w * start_c)(inputs)
    x = layers.Reshape((start_h, start_w, start_c))(x)
    for count in (128, 256, 512)[:steps]:
        x = layers.Conv2DTranspose(_filters(count, width), 4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
    outputs = layers.Conv2D(channels, 5, padding="same", activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="generator")


@keras.saving.register_keras_serializable(package="genpipe")
class GAN(keras.Model):
    """Discriminator + generator with the book's alternating training step."""

    def __init__(
        self,
        discriminator: keras.Model,
        generator: keras.Model,
        latent_dim: int = 128,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_metric = keras.metrics.Mean(name="d_loss")
        self.g_loss_metric = keras.metrics.Mean(name="g_loss")
        self.built = True  # the discriminator and generator arrive built

    def compile(
        self,
        d_optimizer: keras.optimizers.Optimizer | None = None,
        g_optimizer: keras.optimizers.Optimizer | None = None,
        loss_fn: keras.losses.Loss | None = None,
        **kwargs,
    ) -> None:
        """Adam(1e-4) for each network and binary cross-entropy unless given; under
        mixed_float16 each optimizer scales its loss (LossScaleOptimizer)."""
        super().compile(**kwargs)
        policy = self.dtype_policy.name
        self.d_optimizer = _loss_scaled(d_optimizer or keras.optimizers.Adam(1e-4), policy)
        self.g_optimizer = _loss_scaled(g_optimizer or keras.optimizers.Adam(1e-4), policy)
        self.loss_fn = loss_fn or keras.losses.BinaryCrossentropy()
        # Built now, so a saved model restores the optimizer state along with the weights.
        for optimizer, network in (
            (self.d_optimizer, self.discriminator),
            (self.g_optimizer, self.generator),
        ):
            if not optimizer.built:
                optimizer.build(network.trainable_variables)

    def get_compile_config(self) -> dict:
        return {
            "d_optimizer": keras.saving.serialize_keras_object(self.d_optimizer),
            "g_optimizer": keras.saving.serialize_keras_object(self.g_optimizer),
            "loss_fn": keras.saving.serialize_keras_object(self.loss_fn),
        }

    def compile_from_config(self, config: dict) -> None:
        self.compile(
            **{name: keras.saving.deserialize_keras_object(item) for name, item in config.items()}
        )

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.d_loss_metric, self.g_loss_metric]

    def call(self, z, training: bool = False):
        return self.generator(z, training=training)

    def _latents(self, batch_size) -> tf.Tensor:
        """This replica's rows of one draw for every replica: replicas under tf.distribute share
        the seed, and would otherwise generate the same images (one replica: the same draw)."""
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        z = keras.random.normal((batch_size * replicas, self.latent_dim), seed=self.seed_generator)
        start = context.replica_id_in_sync_group * batch_size
        return z[start : start + batch_size]

    def train_step(self, data):
        real_images = data[0] if isinstance(data, (tuple, list)) else data
        batch_size = ops.shape(real_images)[0]

        generated_images = self.generator(self._latents(batch_size), training=True)
        combined_images = ops.concatenate([generated_images, real_images], axis=0)
        labels = ops.concatenate([ops.ones((batch_size, 1)), ops.zeros((batch_size, 1))], axis=0)
        labels += LABEL_NOISE * keras.random.uniform(ops.shape(labels), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            predictions = self.discriminator(combined_images, training=True)
            d_losses = self.loss_fn.call(labels, predictions)  # per image, [2B]
            d_scaled = self.d_optimizer.scale_loss(global_batch_mean(d_losses))
        weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(
            zip(tape.gradient(d_scaled, weights), weights, strict=True)
        )

        misleading_labels = ops.zeros((batch_size, 1))  # "real" for generated images
        with tf.GradientTape() as tape:
            generated_images = self.generator(self._latents(batch_size), training=True)
            predictions = self.discriminator(generated_images, training=True)
            g_losses = self.loss_fn.call(misleading_labels, predictions)
            g_scaled = self.g_optimizer.scale_loss(global_batch_mean(g_losses))
        weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(
            zip(tape.gradient(g_scaled, weights), weights, strict=True)
        )

        self.d_loss_metric.update_state(ops.mean(d_losses))
        self.g_loss_metric.update_state(ops.mean(g_losses))
        return {metric.name: metric.result() for metric in self.metrics}

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "generator": keras.saving.serialize_keras_object(self.generator),
            "latent_dim": self.latent_dim,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        discriminator = keras.saving.deserialize_keras_object(config.pop("discriminator"))
        generator = keras.saving.deserialize_keras_object(config.pop("generator"))
        return cls(discriminator, generator, **config)


def _loss_scaled(optimizer: keras.optimizers.Optimizer, policy: str) -> keras.optimizers.Optimizer:
    """`optimizer`, wrapped in a LossScaleOptimizer under the mixed_float16 policy (float16
    gradients underflow without it); Keras' `compile` does this only for its own optimizer."""
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    if policy == "mixed_float16" and not scaled:
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_gan(
    image_shape: tuple[int, int, int],
    latent_dim: int = 128,
    width: float = 1.0,
    *,
    learning_rate: float = 1e-4,
    seed: int | None = None,
) -> GAN:
    """The book's DCGAN for images of ``image_shape`` in [0, 1], compiled and ready for `fit`."""
    gan = GAN(
        build_discriminator(image_shape, width),
        build_generator(image_shape, latent_dim, width),
        latent_dim=latent_dim,
        seed=seed,
    )
    gan.compile(
        d_optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        g_optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss_fn=keras.losses.BinaryCrossentropy(),
    )
    return gan


class GANMonitor(keras.callbacks.Callback):
    """Each epoch, generates images from fixed latent points and writes them as a grid.

    The grid goes to ``output_dir/epoch_<NNN>.png`` and/or to TensorBoard (``log_dir``) as the
    image summary ``generated``; fixed points make the epochs comparable.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = None,
        num_images: int = 16,
        seed: int = 0,
        every_n_epochs: int = 1,
    ):
        super().__init__()
        if output_dir is None and log_dir is None:
            raise ValueError("GANMonitor needs output_dir, log_dir or both")
        self.output_dir = output_dir
        self.num_images, self.seed, self.every_n_epochs = num_images, seed, every_n_epochs
        self.writer = tf.summary.create_file_writer(os.fspath(log_dir)) if log_dir else None

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        rng = np.random.default_rng(self.seed)
        z = rng.standard_normal((self.num_images, self.model.latent_dim)).astype(np.float32)
        picture = image_grid.grid(self.model.generator(z, training=False))
        if self.output_dir is not None:
            image_grid.save_png(os.path.join(self.output_dir, f"epoch_{epoch:03d}.png"), picture)
        if self.writer is not None:
            with self.writer.as_default():
                tf.summary.image("generated", picture[None], step=epoch)
            self.writer.flush()
