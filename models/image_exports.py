"""SavedModel exports of the VAE and the DCGAN with their serving signatures.

Every input and output has a leading batch dimension [B]; randomness is stateless and keyed by
an int64 ``seed`` per example; every input is checked in the graph, so a bad value fails with
INVALID_ARGUMENT naming the input and its allowed range before any work is done. Only standard
TensorFlow ops are used. The signatures are those of `contracts.vae` and `contracts.gan` (PNG
outputs are ``png_bytes``); the limits fixed at export go to the contract sidecar.

VAE signatures (images float32 [B, H, W, C] in [0, 1], D = latent size):
  decode(z [B, D])                                   -> images [B, H, W, C], png_bytes [B]
  encode(images)                                     -> z_mean [B, D], z_log_var [B, D]
  sample(seed int64 [B])                             -> images, png_bytes, z
  latent_grid(n int32 [B], extent float32 [B])       -> png_bytes [B]
  interpolate(z_a, z_b [B, D], steps int32 [B])      -> png_bytes [B] (strips), images [B, S, ...]
  edit(images, from_label int32 [B], to_label int32 [B], strength float32 [B]) -> images, png_bytes
    (only when label means are given; moves z_mean by strength * (mean[to] - mean[from]))
GAN signatures (images uint8 [B, H, W, C]):
  generate(seed int64 [B]) -> images, png_bytes   (also `serving_default`)
  decode(z float32 [B, latent]) -> images, png_bytes
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from contracts import SEED_MAX
from contracts import gan as gan_contract
from contracts import vae as vae_contract
from models import image_codec, image_grid, saved_model
from models.vae import latent_grid_images

__all__ = [
    "GANLimits",
    "GANServing",
    "VAELimits",
    "VAEServing",
    "export_gan",
    "export_vae",
    "latents_from_seeds",
]



# ----------------------------------------------------------------------------- validation


def _check(condition: tf.Tensor, message: str, *values: tf.Tensor) -> tf.Operation:
    """An in-graph check: fails the call with INVALID_ARGUMENT: ``message`` followed by values.

    Messages start with the input's name, like those of `models.image_codec`.
    """
    return tf.debugging.Assert(condition, [message, *values], summarize=6)


def _check_batch(name: str, tensor: tf.Tensor, max_batch: int) -> tf.Operation:
    size = tf.shape(tensor)[0]
    return _check(
        (size >= 1) & (size <= max_batch),
        f"{name}: batch size must be in [1, {max_batch}]; got",
        size,
    )


def _check_finite(name: str, values: tf.Tensor) -> tf.Operation:
    return _check(
        tf.reduce_all(tf.math.is_finite(values)),
        f"{name} must be finite float32 values; got",
        values,
    )


def _after(checks: list[tf.Operation], *tensors: tf.Tensor) -> list[tf.Tensor]:
    """The tensors, usable only once every check has passed."""
    with tf.control_dependencies(checks):
        return [tf.identity(tensor) for tensor in tensors]


def latents_from_seeds(seeds: tf.Tensor, latent_dim: int) -> tf.Tensor:
    """One standard-normal latent point per int64 seed [B] -> [B, latent_dim].

    Each row depends only on its own seed, so a request's output does not depend on what else
    is in the batch.
    """
    return tf.map_fn(
        lambda seed: tf.random.stateless_normal(
            [latent_dim], seed=tf.stack([seed, tf.constant(0, tf.int64)])
        ),
        seeds,
        fn_output_signature=tf.TensorSpec([latent_dim], tf.float32),
    )


# ----------------------------------------------------------------------------- VAE


@dataclass(frozen=True)
class VAELimits:
    """Request limits fixed at export."""

    max_batch: int = vae_contract.LIMITS["max_batch"]
    max_grid: int = vae_contract.LIMITS["max_grid"]
    max_grid_cells: int = vae_contract.LIMITS["max_grid_cells"]
    max_extent: float = vae_contract.LIMITS["max_extent"]
    max_steps: int = vae_contract.LIMITS["max_steps"]
    max_strength: float = vae_contract.LIMITS["max_strength"]


class VAEServing(tf.Module):
    """The VAE's serving signatures over a trained encoder and decoder."""

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        *,
        label_means: dict[int, np.ndarray] | None = None,
        limits: VAELimits = VAELimits(),
    ):
        super().__init__(name="vae_serving")
        self.encoder, self.decoder, self.limits = encoder, decoder, limits
        self.latent_dim = int(decoder.input_shape[-1])
        self.image_shape = tuple(int(d) for d in decoder.output_shape[1:])
        z_spec = tf.TensorSpec([None, self.latent_dim], tf.float32)
        images_spec = tf.TensorSpec([None, *self.image_shape], tf.float32)
        batch = tf.TensorSpec([None], tf.int32)

        self.decode = tf.function(self._decode, input_signature=[z_spec])
        self.encode = tf.function(self._encode, input_signature=[images_spec])
        self.sample = tf.function(self._sample, input_signature=[tf.TensorSpec([None], tf.int64)])
        self.latent_grid = tf.function(
            self._latent_grid, input_signature=[batch, tf.TensorSpec([None], tf.float32)]
        )
        self.interpolate = tf.function(self._interpolate, input_signature=[z_spec, z_spec, batch])
        self.edit = None
        if label_means:
            labels = sorted(int(label) for label in label_means)
            if labels[0] < 0:
                raise ValueError(f"label_means: labels must be >= 0, got {labels}")
            self.labels_text = ", ".join(map(str, labels))  # a str: tf.Module wraps lists
            table = np.zeros((labels[-1] + 1, self.latent_dim), np.float32)
            known = np.zeros(labels[-1] + 1, bool)
            for label, mean in label_means.items():
                table[int(label)] = np.asarray(mean, np.float32).reshape(self.latent_dim)
                known[int(label)] = True
            self._means, self._known = tf.constant(table), tf.constant(known)
            self.edit = tf.function(
                self._edit,
                input_signature=[images_spec, batch, batch, tf.TensorSpec([None], tf.float32)],
            )

    def signatures(self) -> dict[str, tf.types.experimental.GenericFunction]:
        functions = {
            "decode": self.decode,
            "encode": self.encode,
            "sample": self.sample,
            "latent_grid": self.latent_grid,
            "interpolate": self.interpolate,
        }
        if self.edit is not None:
            functions["edit"] = self.edit
        return functions

    def _decoded(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        images = self.decoder(z, training=False)
        return {"images": images, "png_bytes": image_codec.encode_png(image_grid.to_uint8(images))}

    def _decode(self, z):
        (z,) = _after([_check_batch("z", z, self.limits.max_batch), _check_finite("z", z)], z)
        return self._decoded(z)

    def _check_images(self, images: tf.Tensor) -> list[tf.Operation]:
        return [
            _check_batch("images", images, self.limits.max_batch),
            image_codec.check_in_range(images, "images", 0.0, 1.0),
        ]

    def _encode(self, images):
        (images,) = _after(self._check_images(images), images)
        z_mean, z_log_var = self.encoder(images, training=False)
        return {"z_mean": z_mean, "z_log_var": z_log_var}

    def _sample(self, seed):
        checks = [
            _check_batch("seed", seed, self.limits.max_batch),
            image_codec.check_in_range(seed, "seed", 0, SEED_MAX),
        ]
        (seed,) = _after(checks, seed)
        z = latents_from_seeds(seed, self.latent_dim)
        return {**self._decoded(z), "z": z}

    def _latent_grid(self, n, extent):
        limits = self.limits
        checks = [
            _check_batch("n", n, limits.max_batch),
            image_codec.check_batch_sizes({"n": n, "extent": extent}),
            image_codec.check_in_range(n, "n", 2, limits.max_grid),
            _check(
                tf.reduce_sum(tf.cast(n, tf.int64) ** 2) <= limits.max_grid_cells,
                f"n: the grids may hold at most {limits.max_grid_cells} cells in all "
                "(sum of n * n over the batch); got",
                tf.reduce_sum(tf.cast(n, tf.int64) ** 2),
            ),
            _check(
                tf.reduce_all((extent > 0.0) & (extent <= limits.max_extent)),
                f"extent must be in (0, {limits.max_extent}]; got",
                extent,
            ),
        ]
        n, extent = _after(checks, n, extent)
        png = tf.map_fn(
            lambda args: image_grid.encode_png(latent_grid_images(self.decoder, *args)),
            (n, extent),
            fn_output_signature=tf.string,
        )
        return {"png_bytes": png}

    def _interpolate(self, z_a, z_b, steps):
        checks = [
            _check_batch("z_a", z_a, self.limits.max_batch),
            image_codec.check_batch_sizes({"z_a": z_a, "z_b": z_b, "steps": steps}),
            _check_finite("z_a", z_a),
            _check_finite("z_b", z_b),
            image_codec.check_in_range(steps, "steps", 2, self.limits.max_steps),
        ]
        z_a, z_b, steps = _after(checks, z_a, z_b, steps)
        longest = tf.reduce_max(steps)

        def one_strip(args):
            start, end, count = args
            t = tf.linspace(0.0, 1.0, count)[:, None]
            images = self.decoder(start[None] + t * (end - start)[None], training=False)
            strip = image_grid.encode_png(image_grid.tile(images, 1, count))
            return strip, tf.pad(images, [[0, longest - count], [0, 0], [0, 0], [0, 0]])

        png, images = tf.map_fn(
            one_strip,
            (z_a, z_b, steps),
            fn_output_signature=(
                tf.TensorSpec([], tf.string),
                tf.TensorSpec([None, *self.image_shape], tf.float32),
            ),
        )
        return {"png_bytes": png, "images": images}

    def _check_label(self, name: str, labels: tf.Tensor) -> tf.Operation:
        size = len(self._known)
        in_table = (labels >= 0) & (labels < size)
        known = tf.gather(self._known, tf.clip_by_value(labels, 0, size - 1))
        return _check(
            tf.reduce_all(in_table & known),
            f"{name} must be one of the labels [{self.labels_text}]; got",
            labels,
        )

    def _edit(self, images, from_label, to_label, strength):
        limit = self.limits.max_strength
        checks = [
            *self._check_images(images),
            image_codec.check_batch_sizes(
                {
                    "images": images,
                    "from_label": from_label,
                    "to_label": to_label,
                    "strength": strength,
                }
            ),
            self._check_label("from_label", from_label),
            self._check_label("to_label", to_label),
            image_codec.check_in_range(strength, "strength", -limit, limit),
        ]
        images, from_label, to_label, strength = _after(
            checks, images, from_label, to_label, strength
        )
        z_mean, _ = self.encoder(images, training=False)
        concept = tf.gather(self._means, to_label) - tf.gather(self._means, from_label)
        return self._decoded(z_mean + strength[:, None] * concept)


def export_vae(
    vae: keras.Model,
    export_dir: str | os.PathLike,
    *,
    label_means: dict[int, np.ndarray] | None = None,
    limits: VAELimits = VAELimits(),
) -> dict:
    """Save ``vae`` (anything with ``.encoder`` and ``.decoder``) as a serving SavedModel.

    ``label_means`` (from `models.vae.label_means`) enables the ``edit`` signature. Returns the
    contract sidecar: signature keys, limits, and latent size, image shape and labels as info.
    """
    module = VAEServing(vae.encoder, vae.decoder, label_means=label_means, limits=limits)
    info = {
        "latent_dim": module.latent_dim,
        "image_shape": list(module.image_shape),
        "labels": sorted(int(label) for label in label_means or {}),
    }
    return saved_model.save(
        module,
        export_dir,
        module.signatures(),
        contract=vae_contract.CONTRACT,
        limits=asdict(limits),
        info=info,
    )


# ----------------------------------------------------------------------------- GAN


@dataclass(frozen=True)
class GANLimits:
    """Request limits fixed at export."""

    max_batch: int = gan_contract.LIMITS["max_batch"]


class GANServing(tf.Module):
    """The DCGAN's serving signatures over a trained generator (outputs uint8 images)."""

    def __init__(self, generator: keras.Model, *, limits: GANLimits = GANLimits()):
        super().__init__(name="gan_serving")
        self.generator, self.limits = generator, limits
        self.latent_dim = int(generator.input_shape[-1])
        self.image_shape = tuple(int(d) for d in generator.output_shape[1:])
        self.generate = tf.function(
            self._generate, input_signature=[tf.TensorSpec([None], tf.int64)]
        )
        self.decode = tf.function(
            self._decode, input_signature=[tf.TensorSpec([None, self.latent_dim], tf.float32)]
        )

    def signatures(self) -> dict[str, tf.types.experimental.GenericFunction]:
        return {"serving_default": self.generate, "generate": self.generate, "decode": self.decode}

    def _images(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        images = image_grid.to_uint8(self.generator(z, training=False))
        return {"images": images, "png_bytes": image_codec.encode_png(images)}

    def _generate(self, seed):
        checks = [
            _check_batch("seed", seed, self.limits.max_batch),
            image_codec.check_in_range(seed, "seed", 0, SEED_MAX),
        ]
        (seed,) = _after(checks, seed)
        return self._images(latents_from_seeds(seed, self.latent_dim))

    def _decode(self, z):
        (z,) = _after([_check_batch("z", z, self.limits.max_batch), _check_finite("z", z)], z)
        return self._images(z)


def export_gan(
    generator: keras.Model, export_dir: str | os.PathLike, *, limits: GANLimits = GANLimits()
) -> dict:
    """Save ``generator`` as a serving SavedModel; returns the contract sidecar."""
    module = GANServing(generator, limits=limits)
    info = {"latent_dim": module.latent_dim, "image_shape": list(module.image_shape)}
    return saved_model.save(
        module,
        export_dir,
        module.signatures(),
        contract=gan_contract.CONTRACT,
        limits=asdict(limits),
        info=info,
    )
