"""The convolutional variational autoencoder of Deep Learning with Python, section 12.4.

The encoder maps an image to the mean and log-variance of a Gaussian over a small latent space;
the `Sampler` draws a point from it (reparameterization trick); the decoder maps the point back
to pixel probabilities. Training minimizes the negative evidence lower bound (ELBO):
Bernoulli reconstruction loss summed over pixels plus the KL divergence to N(0, I) summed over
latent dimensions (the book's code averages the KL term over dimensions, which weakens it by a
factor of D; summing gives the true ELBO, in nats per image).

Under a mixed-precision policy the latent statistics, the sampler and the decoder's pixel
probabilities stay float32 (Keras' mixed-precision guide: numerically sensitive outputs in
float32), and the training step reduces its loss over the global batch (`models.distributed`).
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from models import image_grid
from models.distributed import global_batch_mean

ImageShape = tuple[int, int, int]  # height, width, channels

__all__ = [
    "VAE",
    "LatentGridCallback",
    "Sampler",
    "build_decoder",
    "build_encoder",
    "build_vae",
    "kl_divergence",
    "label_means",
    "latent_grid",
    "latent_grid_images",
    "negative_elbo",
    "reconstruction_loss",
]


@keras.saving.register_keras_serializable(package="genpipe")
class Sampler(layers.Layer):
    """Draws z = z_mean + exp(z_log_var / 2) * epsilon with epsilon ~ N(0, I)."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, z_mean, z_log_var):
        epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


def _check_image_shape(image_shape: ImageShape) -> None:
    height, width, _ = image_shape
    if height % 4 or width % 4:
        raise ValueError(f"image_shape {image_shape}: height and width must be multiples of 4")


def build_encoder(latent_dim: int = 2, image_shape: ImageShape = (28, 28, 1)) -> keras.Model:
    """Image -> (z_mean, z_log_var): two strided 3x3 convs (32, 64), dense 16."""
    _check_image_shape(image_shape)
    inputs = keras.Input(shape=image_shape, name="images")
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype="float32")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype="float32")(x)
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")


def build_decoder(latent_dim: int = 2, image_shape: ImageShape = (28, 28, 1)) -> keras.Model:
    """z -> pixel probabilities: dense to a (H/4, W/4, 64) map, two strided 3x3 transposed convs."""
    _check_image_shape(image_shape)
    height, width, channels = image_shape
    inputs = keras.Input(shape=(latent_dim,), name="z")
    x = layers.Dense((height // 4) * (width // 4) * 64, activation="relu")(inputs)
    x = layers.Reshape((height // 4, width // 4, 64))(x)
    x = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(x)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="decoder")


def reconstruction_loss(images: tf.Tensor, reconstruction: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy summed over pixels and channels: [B] nats."""
    per_pixel = keras.losses.binary_crossentropy(images[..., None], reconstruction[..., None])
    return ops.sum(per_pixel, axis=(1, 2, 3))


def kl_divergence(z_mean: tf.Tensor, z_log_var: tf.Tensor) -> tf.Tensor:
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)) summed over latent dimensions: [B] nats."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def _images_only(data):
    """fit() may pass images, (images,) or (images, labels); the VAE needs the images."""
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


@keras.saving.register_keras_serializable(package="genpipe")
class VAE(keras.Model):
    """Encoder + sampler + decoder trained on the negative ELBO.

    Calling the model reconstructs images deterministically through z_mean.
    """

    def __init__(
        self, encoder: keras.Model, decoder: keras.Model, seed: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.sampler = Sampler(seed=seed, name="sampler", dtype="float32")
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.built = True  # the encoder and decoder arrive built

    @property
    def latent_dim(self) -> int:
        return int(self.decoder.input_shape[-1])

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def call(self, images, training: bool = False):
        z_mean, _ = self.encoder(images, training=training)
        return self.decoder(z_mean, training=training)

    def _elbo_terms(self, images, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-image reconstruction loss and KL divergence, [B] each."""
        z_mean, z_log_var = self.encoder(images, training=training)
        z = self.sampler(z_mean, z_log_var)
        reconstruction = self.decoder(z, training=training)
        return reconstruction_loss(images, reconstruction), kl_divergence(z_mean, z_log_var)

    def _record(self, reconstruction: tf.Tensor, kl: tf.Tensor) -> dict[str, tf.Tensor]:
        reconstruction, kl = ops.mean(reconstruction), ops.mean(kl)
        self.total_loss_tracker.update_state(reconstruction + kl)
        self.reconstruction_loss_tracker.update_state(reconstruction)
        self.kl_loss_tracker.update_state(kl)
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        images = _images_only(data)
        with tf.GradientTape() as tape:
            reconstruction, kl = self._elbo_terms(images, training=True)
            total = global_batch_mean(reconstruction) + global_batch_mean(kl)
            scaled = self.optimizer.scale_loss(total)  # mixed_float16's loss scaling
        gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        return self._record(reconstruction, kl)

    def test_step(self, data):
        reconstruction, kl = self._elbo_terms(_images_only(data), training=False)
        return self._record(reconstruction, kl)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "seed": self.sampler.seed,
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(encoder, decoder, **config)


def build_vae(
    latent_dim: int = 2,
    image_shape: ImageShape = (28, 28, 1),
    *,
    learning_rate: float = 1e-3,
    seed: int | None = None,
) -> VAE:
    """The book's VAE, compiled with Adam and ready for `fit(images, ...)` (images in [0, 1])."""
    vae = VAE(
        build_encoder(latent_dim, image_shape), build_decoder(latent_dim, image_shape), seed=seed
    )
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return vae


def _batches(data, batch_size: int) -> Iterable:
    """A tf.data.Dataset (of images or (images, labels)) or an array -> batches of images."""
    if isinstance(data, tf.data.Dataset):
        return (_images_only(batch) for batch in data)
    data = np.asarray(data, dtype=np.float32)
    return (data[start : start + batch_size] for start in range(0, len(data), batch_size))


def negative_elbo(vae: VAE, data, *, seed: int = 0, batch_size: int = 256) -> float:
    """Held-out negative ELBO in nats per image (one reparameterized sample per image).

    ``data`` is an array of images in [0, 1] or a batched tf.data.Dataset of them. The sampling
    noise is stateless and keyed by ``seed``, so the same model and data give the same number.
    """
    total, count = 0.0, 0
    for index, images in enumerate(_batches(data, batch_size)):
        images = tf.convert_to_tensor(images, tf.float32)
        z_mean, z_log_var = vae.encoder(images, training=False)
        epsilon = tf.random.stateless_normal(tf.shape(z_mean), seed=[seed, index])
        z = z_mean + tf.exp(0.5 * z_log_var) * epsilon
        losses = reconstruction_loss(images, vae.decoder(z, training=False))
        losses += kl_divergence(z_mean, z_log_var)
        total += float(tf.reduce_sum(losses))
        count += int(tf.shape(images)[0])
    if count == 0:
        raise ValueError("negative_elbo: data holds no images")
    return total / count


def label_means(
    encoder: keras.Model, images, labels, *, batch_size: int = 256
) -> dict[int, np.ndarray]:
    """Mean z_mean of each label's images: the anchors of the book's concept vectors."""
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(images) != len(labels):
        raise ValueError(f"label_means: {len(images)} images but {len(labels)} labels")
    z_mean = np.concatenate(
        [
            np.asarray(encoder(images[start : start + batch_size], training=False)[0])
            for start in range(0, len(images), batch_size)
        ]
    )
    return {int(label): z_mean[labels == label].mean(axis=0) for label in np.unique(labels)}


def latent_grid_images(decoder: keras.Model, n, extent) -> tf.Tensor:
    """The book's digit grid as one float image [n * H, n * W, C] (graph-friendly).

    Decodes an n x n grid of latent points spaced evenly in [-extent, extent] over the first two
    latent dimensions (x to the right, y upwards; further dimensions, if any, are 0).
    """
    latent_dim = int(decoder.input_shape[-1])
    n = tf.cast(n, tf.int32)
    extent = tf.cast(extent, tf.float32)
    steps = tf.linspace(-extent, extent, n)
    y, x = tf.meshgrid(tf.reverse(steps, [0]), steps, indexing="ij")
    points = tf.stack([tf.reshape(x, [-1]), tf.reshape(y, [-1])], axis=1)[:, :latent_dim]
    z = tf.pad(points, [[0, 0], [0, max(latent_dim - 2, 0)]])
    images = decoder(z, training=False)
    return image_grid.tile(images, n, n)


def latent_grid(decoder: keras.Model, n: int = 30, extent: float = 1.0) -> np.ndarray:
    """`latent_grid_images` as a numpy float32 array [n * H, n * W, C] in [0, 1]."""
    if n < 1:
        raise ValueError(f"latent_grid: n must be >= 1, got {n}")
    return latent_grid_images(decoder, n, extent).numpy()


class LatentGridCallback(keras.callbacks.Callback):
    """Writes the latent digit grid as a TensorBoard image summary at the end of each epoch."""

    def __init__(self, log_dir: str, n: int = 15, extent: float = 1.0, every_n_epochs: int = 1):
        super().__init__()
        self.n, self.extent, self.every_n_epochs = n, extent, every_n_epochs
        self.writer = tf.summary.create_file_writer(str(log_dir))

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        picture = latent_grid(self.model.decoder, self.n, self.extent)
        with self.writer.as_default():
            tf.summary.image("latent_grid", picture[None], step=epoch)
        self.writer.flush()
