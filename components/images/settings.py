"""Settings of the VAE and DCGAN pipelines' components, declared once (no TensorFlow or TFX
import).

`pipeline.profiles` composes them into `VaeProfile` / `GanProfile`; each component receives its
part as a plain dict (`dataclasses.asdict`): the Trainers rebuild the same class from their
`custom_config` (`components.common.config.settings_from_config`), the evaluators take it as
keyword arguments.
"""

from __future__ import annotations

import dataclasses

from components.common.settings import TrainingSettings


@dataclasses.dataclass(frozen=True)
class ImageIngestionSettings:
    """What `ImageExampleGen` reads: digit sets are 28x28x1; image folders are cropped and
    resized to `folder_image_size` with `folder_channels`."""

    max_images: int  # per source split; 0: every image
    folder_image_size: int = 64
    folder_channels: int = 3

    def folder_shape(self) -> tuple[int, int, int]:
        return (self.folder_image_size, self.folder_image_size, self.folder_channels)


@dataclasses.dataclass(frozen=True)
class ImageTransformSettings:
    """`custom_config` of Transform (`components.images.transform`): the ingested image shape."""

    image_height: int
    image_width: int
    image_channels: int


@dataclasses.dataclass(frozen=True)
class VaeTrainerSettings(TrainingSettings):
    """`custom_config` of the VAE Trainer (`components.images.vae_trainer.run_fn`)."""

    latent_dim: int = 2
    batch_size: int = 128
    epochs: int = 30
    steps_per_epoch: int = 0  # 0: one full pass over the training split per epoch
    learning_rate: float = 1e-3
    grid_size: int = 15  # the latent grid logged each epoch: grid_size x grid_size digits
    grid_extent: float = 1.0
    label_means_images: int = 10_000  # training images averaged per label for `edit`
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class VaeEvaluatorSettings:
    """Keyword arguments of `components.images.evaluate.VaeEvaluator`."""

    max_negative_elbo: float = 160.0  # held-out nats per image
    baseline_tolerance: float = 0.05
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class GanTrainerSettings(TrainingSettings):
    """`custom_config` of the DCGAN Trainer (`components.images.gan_trainer.run_fn`)."""

    latent_dim: int = 128
    width: float = 1.0  # scales every filter count of both networks (1 = the chapter's)
    batch_size: int = 32
    epochs: int = 100
    steps_per_epoch: int = 0  # 0: one full pass over the training split per epoch
    learning_rate: float = 1e-4
    adam_beta_1: float = 0.9  # the chapter keeps Adam's default; 0.5 (DCGAN paper) is steadier
    sample_images: int = 16  # generations in the per-epoch sample grid
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class GanEvaluatorSettings:
    """Keyword arguments of `components.images.evaluate.GanEvaluator`: KID on InceptionV3 at
    `kid_image_size` pixels, and the blessing thresholds."""

    kid_images: int = 1000
    kid_image_size: int = 299
    kid_weights: str = "packaged"
    kid_num_subsets: int = 100
    kid_subset_size: int = 1000
    max_kid: float = 1.0
    max_untrained_ratio: float = 1.0  # KID at most this times the untrained generator's
    baseline_tolerance: float = 0.25  # KID is noisy: may be 25% worse than the last blessed
    seed: int = 0
    # with a digit classifier only (DigitClassifierSettings): TF-GAN's MNIST scores
    min_classifier_score: float = 0.0
    max_classifier_fid_ratio: float = 1.0  # classifier FID at most this x the untrained's


@dataclasses.dataclass(frozen=True)
class DigitClassifierSettings:
    """Parameters of `components.images.digit_classifier.DigitClassifierTrainer`, the digit
    classifier whose features score a GAN trained on a digit set (not on image folders)."""

    max_images: int  # training digits (and as many held-out test digits); 0: all
    epochs: int
    seed: int = 0
