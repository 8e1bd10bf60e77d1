"""Profiles as data: `smoke` (tests), `demo` (minutes on a CPU), `book` (the chapter's settings).

Each model has a frozen dataclass of its settings and a dict of the three profiles; the pipeline
factories turn a profile into component configs. No TensorFlow or TFX import here (the CLI
reads this module to validate arguments quickly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from contracts import deepdream, fast_style, style_transfer, text_lm

PROFILE_NAMES = ("smoke", "demo", "book")

Profile = TypeVar("Profile")


@dataclasses.dataclass(frozen=True)
class TextProfile:
    """Settings of the Transformer language model pipeline (DLwP 12.1)."""

    name: str
    # ingestion
    max_documents: int  # 0: every document of the source
    # Transform
    vocab_size: int  # including padding (id 0) and [UNK] (id 1), like TextVectorization
    sequence_length: int
    # Trainer
    embed_dim: int
    latent_dim: int
    num_heads: int
    num_layers: int
    batch_size: int
    epochs: int
    learning_rate: float
    steps_per_epoch: int = 0  # 0: one full pass over the training split per epoch
    sample_prompt: str = "this movie"
    sample_temperatures: tuple[float, ...] = (0.2, 0.5, 0.7, 1.0, 1.5)
    sample_max_tokens: int = 50
    max_new_tokens: int = text_lm.LIMITS["max_new_tokens"]  # limit of the `generate` signature
    seed: int = 0
    # evaluation and blessing
    perplexity_threshold: float = 1000.0
    baseline_tolerance: float = 0.05  # relative: may be 5% worse than the last blessed model
    max_unigram_ratio: float = 1.0  # perplexity at most this times the unigram baseline's

    def transform_config(self) -> dict[str, Any]:
        """`custom_config` of Transform (read by components.text.transform)."""
        return {"vocab_size": self.vocab_size, "sequence_length": self.sequence_length}

    def trainer_config(self) -> dict[str, Any]:
        """`custom_config` of the Trainer (components.text.trainer.TrainerSettings)."""
        names = (
            "sequence_length", "embed_dim", "latent_dim", "num_heads", "num_layers",
            "batch_size", "epochs", "steps_per_epoch", "learning_rate", "sample_prompt",
            "sample_max_tokens", "max_new_tokens", "seed",
        )
        config = {name: getattr(self, name) for name in names}
        config["sample_temperatures"] = list(self.sample_temperatures)
        return config

    def evaluator_parameters(self) -> dict[str, Any]:
        """Parameters of components.text.evaluate.TextLmEvaluator."""
        return {
            "perplexity_threshold": self.perplexity_threshold,
            "baseline_tolerance": self.baseline_tolerance,
            "max_unigram_ratio": self.max_unigram_ratio,
            "batch_size": self.batch_size,
        }


TEXT_PROFILES: dict[str, TextProfile] = {
    # A few hundred snippets and a tiny model: the whole pipeline in about a minute of work.
    "smoke": TextProfile(
        name="smoke", max_documents=300, vocab_size=500, sequence_length=16,
        embed_dim=16, latent_dim=32, num_heads=2, num_layers=1,
        batch_size=32, epochs=6, learning_rate=5e-3,
        sample_temperatures=(0.5, 1.0), sample_max_tokens=8, max_new_tokens=15,
        perplexity_threshold=500.0, max_unigram_ratio=1.0,
    ),
    # The whole offline corpus; a small model that clearly beats the unigram baseline on 2 cores.
    "demo": TextProfile(
        name="demo", max_documents=0, vocab_size=5000, sequence_length=32,
        embed_dim=64, latent_dim=128, num_heads=2, num_layers=1,
        batch_size=64, epochs=2, learning_rate=2e-3,
        sample_max_tokens=25, max_new_tokens=31,
        perplexity_threshold=400.0, max_unigram_ratio=0.5,
    ),
    # The chapter: 15,000 words, length 100, embed 256, latent 2048, 2 heads, 200 epochs, RMSprop.
    "book": TextProfile(
        name="book", max_documents=0, vocab_size=15000, sequence_length=100,
        embed_dim=256, latent_dim=2048, num_heads=2, num_layers=1,
        batch_size=256, epochs=200, learning_rate=1e-3,
        sample_max_tokens=50, max_new_tokens=50,
        perplexity_threshold=400.0, max_unigram_ratio=0.5,
    ),
}


def get_profile(profiles: Mapping[str, Profile], name: str) -> Profile:
    """The profile called `name`, or a ValueError naming the allowed profiles."""
    if name not in profiles:
        raise ValueError(f"profile {name!r} is unknown; allowed: {', '.join(profiles)}")
    return profiles[name]


@dataclasses.dataclass(frozen=True)
class VaeProfile:
    """Settings of the variational autoencoder pipeline (DLwP 12.4)."""

    name: str
    # ingestion: digit sets are 28x28x1; image folders are cropped and resized to this
    max_images: int  # per source split; 0: every image
    folder_image_size: int = 64
    folder_channels: int = 3
    # Trainer (components.images.vae_trainer.VaeTrainerSettings)
    latent_dim: int = 2
    batch_size: int = 128
    epochs: int = 30
    steps_per_epoch: int = 0  # 0: one full pass over the training split per epoch
    learning_rate: float = 1e-3
    grid_size: int = 15
    grid_extent: float = 1.0
    seed: int = 0
    # evaluation and blessing (components.images.evaluate.VaeEvaluator)
    max_negative_elbo: float = 160.0  # held-out nats per image
    baseline_tolerance: float = 0.05

    def folder_shape(self) -> tuple[int, int, int]:
        return (self.folder_image_size, self.folder_image_size, self.folder_channels)

    def trainer_config(self) -> dict[str, Any]:
        names = ("latent_dim", "batch_size", "epochs", "steps_per_epoch", "learning_rate",
                 "grid_size", "grid_extent", "seed")
        return {name: getattr(self, name) for name in names}

    def evaluator_parameters(self) -> dict[str, Any]:
        return {"max_negative_elbo": self.max_negative_elbo,
                "baseline_tolerance": self.baseline_tolerance, "seed": self.seed}


VAE_PROFILES: dict[str, VaeProfile] = {
    # 300 train + 300 held-out digits, two short epochs: a VAE that has learnt something (an
    # untrained one scores about 544 nats, the cost of predicting grey everywhere).
    "smoke": VaeProfile(name="smoke", max_images=300, batch_size=64, epochs=2,
                        learning_rate=3e-3, grid_size=5, max_negative_elbo=350.0),
    # All 60,000 MNIST digits, a few epochs on 2 CPU cores (4 epochs gave 156.9 and 158.1 nats
    # in two runs: too close to the 160 limit, so 6).
    "demo": VaeProfile(name="demo", max_images=0, batch_size=128, epochs=5,
                       learning_rate=2e-3, max_negative_elbo=160.0),
    # The chapter: latent 2, 30 epochs, Adam, batch 128.
    "book": VaeProfile(name="book", max_images=0, batch_size=128, epochs=30,
                       max_negative_elbo=160.0),
}


@dataclasses.dataclass(frozen=True)
class GanProfile:
    """Settings of the DCGAN pipeline (DLwP 12.5)."""

    name: str
    # ingestion: digit sets are 28x28x1; image folders (faces) are cropped and resized to this
    max_images: int  # per source split; 0: every image
    folder_image_size: int = 64
    folder_channels: int = 3
    # Trainer (components.images.gan_trainer.GanTrainerSettings)
    latent_dim: int = 128
    width: float = 1.0  # scales every filter count (1 = the chapter's networks)
    batch_size: int = 32
    epochs: int = 100
    steps_per_epoch: int = 0  # 0: one full pass over the training split per epoch
    learning_rate: float = 1e-4
    adam_beta_1: float = 0.9  # the chapter's (Adam's default); 0.5 (DCGAN paper) is steadier
    sample_images: int = 16
    seed: int = 0
    # KID (components.images.evaluate.GanEvaluator): InceptionV3 at kid_image_size pixels
    kid_images: int = 1000
    kid_image_size: int = 299
    kid_weights: str = "packaged"
    kid_num_subsets: int = 100
    kid_subset_size: int = 1000
    # blessing
    max_kid: float = 1.0
    max_untrained_ratio: float = 1.0  # KID at most this times the untrained generator's
    baseline_tolerance: float = 0.25  # KID is noisy: may be 25% worse than the last blessed

    def folder_shape(self) -> tuple[int, int, int]:
        return (self.folder_image_size, self.folder_image_size, self.folder_channels)

    def trainer_config(self) -> dict[str, Any]:
        names = ("latent_dim", "width", "batch_size", "epochs", "steps_per_epoch",
                 "learning_rate", "adam_beta_1", "sample_images", "seed")
        return {name: getattr(self, name) for name in names}

    def evaluator_parameters(self) -> dict[str, Any]:
        names = ("kid_images", "kid_image_size", "kid_weights", "kid_num_subsets",
                 "kid_subset_size", "max_kid", "max_untrained_ratio", "baseline_tolerance",
                 "seed")
        return {name: getattr(self, name) for name in names}


GAN_PROFILES: dict[str, GanProfile] = {
    # 300 train + 300 held-out digits, a quarter-width GAN for 150 steps (measured: KID 0.29 to
    # 0.36 of the untrained generator's over 3 seeds); KID on InceptionV3 at its smallest input
    # (75 px) over 300 images: honest, but coarse.
    "smoke": GanProfile(name="smoke", max_images=300, latent_dim=32, width=0.25,
                        batch_size=64, epochs=3, steps_per_epoch=50, learning_rate=2e-4,
                        adam_beta_1=0.5, sample_images=9,
                        kid_images=300, kid_image_size=75, kid_num_subsets=20,
                        kid_subset_size=150, max_untrained_ratio=1.0),
    # MNIST, a half-width GAN for a few minutes on 2 CPU cores; KID at 75 px over 1,000 images
    # must be at most a third of the untrained generator's.
    "demo": GanProfile(name="demo", max_images=0, latent_dim=128, width=0.5,
                       batch_size=64, epochs=4, steps_per_epoch=200, learning_rate=2e-4,
                       adam_beta_1=0.5,
                       kid_images=1000, kid_image_size=75, kid_num_subsets=50,
                       kid_subset_size=500, max_untrained_ratio=1 / 3),
    # The chapter: latent 128, 64x64 faces, 100 epochs, batch 32, Adam 1e-4; KID at 299 px.
    "book": GanProfile(name="book", max_images=0, latent_dim=128, width=1.0,
                       batch_size=32, epochs=100, learning_rate=1e-4,
                       kid_images=5000, kid_image_size=299, max_untrained_ratio=1 / 3),
}


# ----------------------------------------------------------------------------- DeepDream, style

# The chapter's DeepDream layer contributions (DLwP 12.2).
CHAPTER_DREAM_LAYERS = (("mixed4", 1.0), ("mixed5", 1.5), ("mixed6", 2.0), ("mixed7", 2.5))


@dataclasses.dataclass(frozen=True)
class DreamProfile:
    """Settings of the DeepDream export (DLwP 12.2); request values come from the contract."""

    name: str
    weights: str = "imagenet"  # models.pretrained: imagenet (offline: packaged) | packaged | none
    layer_weights: tuple[tuple[str, float], ...] = CHAPTER_DREAM_LAYERS
    max_pixels: int = deepdream.LIMITS["max_pixels"]  # export limits of the `dream` signature
    max_iterations: int = deepdream.LIMITS["max_iterations"]

    def export_settings(self) -> dict[str, Any]:
        return {"weights": self.weights, "layer_weights": dict(self.layer_weights),
                "max_pixels": self.max_pixels, "max_iterations": self.max_iterations}


DREAM_PROFILES: dict[str, DreamProfile] = {
    # Real (packaged) ImageNet weights, small limits: seconds to export and validate.
    "smoke": DreamProfile(name="smoke", weights="packaged", max_pixels=300 * 300,
                          max_iterations=10),
    # ImageNet weights (the demo script then dreams for real through the pushed model).
    "demo": DreamProfile(name="demo"),
    # The chapter: mixed4-7 weighted 1/1.5/2/2.5 (3 octaves x1.4, 30 steps of 20, max loss 15
    # are the `dream` signature's defaults), on images up to 2048 x 2048.
    "book": DreamProfile(name="book", max_pixels=2048 * 2048),
}


@dataclasses.dataclass(frozen=True)
class StyleProfile:
    """Settings of the Gatys style transfer export (DLwP 12.3)."""

    name: str
    weights: str = "imagenet"
    max_height: int = style_transfer.LIMITS["max_height"]  # export limits of `transfer`
    max_iterations: int = style_transfer.LIMITS["max_iterations"]
    max_pixels: int = style_transfer.LIMITS["max_pixels"]

    def export_settings(self) -> dict[str, Any]:
        return {"weights": self.weights, "max_height": self.max_height,
                "max_iterations": self.max_iterations, "max_pixels": self.max_pixels}


STYLE_PROFILES: dict[str, StyleProfile] = {
    # Real (packaged) VGG19 weights, small limits: seconds to export and validate.
    "smoke": StyleProfile(name="smoke", weights="packaged", max_height=128, max_iterations=20),
    # ImageNet weights; images up to height 400.
    "demo": StyleProfile(name="demo"),
    # The chapter: height 400, weights 2.5e-8/1e-6/1e-6, SGD 100 decaying 0.96, 4000 iterations.
    "book": StyleProfile(name="book"),
}


@dataclasses.dataclass(frozen=True)
class FastStyleProfile:
    """Settings of the fast style network pipeline (Johnson et al. 2016, on DLwP 12.3's VGG19)."""

    name: str
    weights: str = "imagenet"
    # ingestion (components.fast_style.photos.ContentPhotoGen)
    crop_size: int = 256
    crops_per_photo: int = 8
    scale_side: int = 320  # photos are scaled to this shorter side before cropping
    # Trainer (components.fast_style.trainer.FastStyleSettings); steps = Trainer num_steps
    steps: int = 2000
    style_size: int = 256
    filters: tuple[int, int, int] = (32, 64, 128)
    num_residual_blocks: int = 5
    batch_size: int = 4
    learning_rate: float = 1e-3
    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 1.0
    max_pixels: int = fast_style.LIMITS["max_pixels"]
    seed: int = 0

    def photo_gen_parameters(self) -> dict[str, Any]:
        return {"crop_size": self.crop_size, "crops_per_photo": self.crops_per_photo,
                "scale_side": self.scale_side, "seed": self.seed}

    def trainer_config(self, style: str) -> dict[str, Any]:
        names = ("style_size", "weights", "num_residual_blocks", "batch_size",
                 "learning_rate", "content_weight", "style_weight", "tv_weight", "max_pixels",
                 "seed")
        return {"style": style, "filters": list(self.filters),
                **{name: getattr(self, name) for name in names}}


FAST_STYLE_PROFILES: dict[str, FastStyleProfile] = {
    # A narrow net on 64 px crops for a few steps: the pipeline's shapes and plumbing.
    "smoke": FastStyleProfile(name="smoke", weights="packaged", crop_size=64, crops_per_photo=2,
                              scale_side=96, steps=4, style_size=96, filters=(8, 16, 32),
                              num_residual_blocks=1, batch_size=4, learning_rate=1e-2),
    # A half-width net on 128 px crops: ~0.67 s a step, under 3 minutes on 2 CPU cores.
    "demo": FastStyleProfile(name="demo", crop_size=96, crops_per_photo=8, scale_side=192,
                             steps=120, style_size=192, filters=(16, 32, 64),
                             num_residual_blocks=3, batch_size=4, learning_rate=3e-3),
    # The paper's network and 256 px crops (it trains 40k steps of 4 on COCO; give it photos).
    "book": FastStyleProfile(name="book", crop_size=256, steps=40000),
}
