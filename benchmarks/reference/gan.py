"""The chapter's DCGAN (DLwP 12.5): strided-convolution discriminator, transposed-convolution
generator, and the custom `train_step` with noisy labels.

The listing is for 64x64 faces; on 28x28 digits the generator starts at 7x7 and upsamples twice
(the listing's first two transposed convolutions), and every layer's filters are scaled by the
profile's `width`, so both sides train networks of the same size. The generator is a plain
functional model: genpipe's GAN evaluator loads and scores it like the Trainer's.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

LABEL_NOISE = 0.05  # the listing's "add random noise to the labels"


def _filters(count: int, width: float) -> int:
    return max(1, int(round(count * width)))


def build_discriminator(image_shape: tuple[int, int, int], width: float) -> keras.Model:
    return keras.Sequential([
        keras.Input(shape=image_shape),
        layers.Conv2D(_filters(64, width), 4, strides=2, padding="same"),
        layers.LeakyReLU(0.2),
        layers.Conv2D(_filters(128, width), 4, strides=2, padding="same"),
        layers.LeakyReLU(0.2),
        layers.Conv2D(_filters(128, width), 4, strides=2, padding="same"),
        layers.LeakyReLU(0.2),
        layers.Flatten(),
        layers.Dropout(0.2),
        layers.Dense(1, activation="sigmoid"),
    ], name="discriminator")


def build_generator(image_shape: tuple[int, int, int], latent_dim: int,
                    width: float) -> keras.Model:
    height, image_width, channels = image_shape
    upsamplings = 2 if height == 28 else 3
    start = height // 2**upsamplings
    model = [
        keras.Input(shape=(latent_dim,)),
        layers.Dense(start * (image_width // 2**upsamplings) * _filters(128, width)),
        layers.Reshape((start, image_width // 2**upsamplings, _filters(128, width))),
    ]
    for filters in (128, 256, 512)[:upsamplings]:
        model += [layers.Conv2DTranspose(_filters(filters, width), 4, strides=2, padding="same"),
                  layers.LeakyReLU(0.2)]
    model.append(layers.Conv2D(channels, 5, padding="same", activation="sigmoid"))
    return keras.Sequential(model, name="generator")


class GAN(keras.Model):
    """The discriminator learns real from generated; the generator learns to fool it."""

    def __init__(self, discriminator, generator, latent_dim: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_metric = keras.metrics.Mean(name="d_loss")
        self.g_loss_metric = keras.metrics.Mean(name="g_loss")

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn

    @property
    def metrics(self):
        return [self.d_loss_metric, self.g_loss_metric]

    def train_step(self, real_images):
        if isinstance(real_images, (tuple, list)):  # fit(x) may hand over (x,)
            real_images = real_images[0]
        batch_size = tf.shape(real_images)[0]
        latents = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
        combined_images = tf.concat([self.generator(latents), real_images], axis=0)
        labels = tf.concat([tf.ones((batch_size, 1)), tf.zeros((batch_size, 1))], axis=0)
        labels += LABEL_NOISE * keras.random.uniform(tf.shape(labels), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(combined_images))
        weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights, strict=True))

        latents = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
        misleading_labels = tf.zeros((batch_size, 1))
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(misleading_labels, self.discriminator(self.generator(latents)))
        weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights, strict=True))
        self.d_loss_metric.update_state(d_loss)
        self.g_loss_metric.update_state(g_loss)
        return {"d_loss": self.d_loss_metric.result(), "g_loss": self.g_loss_metric.result()}


def build_reference_gan(image_shape: tuple[int, int, int], latent_dim: int, width: float,
                        learning_rate: float, beta_1: float, seed: int) -> GAN:
    gan = GAN(build_discriminator(image_shape, width),
              build_generator(image_shape, latent_dim, width), latent_dim, seed)
    gan.compile(d_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1),
                g_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1),
                loss_fn=keras.losses.BinaryCrossentropy())
    return gan
