"""The chapter's convolutional VAE (DLwP 12.4): encoder to (z_mean, z_log_var), the sampling
layer, decoder, and the chapter's custom `train_step`.

The loss is the listing's: binary cross-entropy summed over the pixels and averaged over the
batch, plus the KL term averaged over the batch *and* the latent dimensions (so with a 2-D
latent space it weighs half of the KL divergence). Held-out scoring uses genpipe's
`models.vae.negative_elbo`, which reads `encoder` and `decoder` from any model that has them.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


class Sampler(layers.Layer):
    """z = z_mean + exp(z_log_var / 2) * epsilon."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, z_mean, z_log_var):
        epsilon = keras.random.normal(tf.shape(z_mean), seed=self.seed_generator)
        return z_mean + tf.exp(0.5 * z_log_var) * epsilon


def build_encoder(latent_dim: int, image_shape: tuple[int, int, int]) -> keras.Model:
    inputs = keras.Input(shape=image_shape)
    x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(inputs)
    x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")


def build_decoder(latent_dim: int, image_shape: tuple[int, int, int]) -> keras.Model:
    height, width, channels = image_shape
    inputs = keras.Input(shape=(latent_dim,))
    x = layers.Dense((height // 4) * (width // 4) * 64, activation="relu")(inputs)
    x = layers.Reshape((height // 4, width // 4, 64))(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    outputs = layers.Conv2D(channels, 3, activation="sigmoid", padding="same")(x)
    return keras.Model(inputs, outputs, name="decoder")


class VAE(keras.Model):
    """Encoder, sampler and decoder trained on the chapter's loss."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.sampler = Sampler(seed)
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker]

    def train_step(self, data):
        if isinstance(data, (tuple, list)):  # fit(x) may hand over (x,)
            data = data[0]
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(data)
            reconstruction = self.decoder(self.sampler(z_mean, z_log_var))
            reconstruction_loss = tf.reduce_mean(tf.reduce_sum(
                keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2)))
            kl_loss = -0.5 * (1 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var))
            total_loss = reconstruction_loss + tf.reduce_mean(kl_loss)
        gradients = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        self.total_loss_tracker.update_state(total_loss)
        return {"total_loss": self.total_loss_tracker.result()}


def build_reference_vae(
    latent_dim: int, image_shape: tuple[int, int, int], learning_rate: float, seed: int
) -> VAE:
    vae = VAE(build_encoder(latent_dim, image_shape), build_decoder(latent_dim, image_shape), seed)
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return vae
