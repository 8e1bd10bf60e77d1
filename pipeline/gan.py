"""The DCGAN pipeline (DLwP 12.5): `genpipe run gan` (see `pipeline.images` for the components)."""

from __future__ import annotations

from typing import Any

from pipeline import images
from pipeline.profiles import GAN_PROFILES, get_profile
from pipeline.runner import RunOptions, RunSummary

MODEL = images.GAN
MODEL_NAME = MODEL.name  # the serving name (`contracts.gan`)


def build_pipeline(options: RunOptions, *, for_local_run: bool = True) -> Any:
    """The DCGAN pipeline for `genpipe run gan` options (`options.source` is the dataset)."""
    profile = get_profile(GAN_PROFILES, options.profile)
    return images.build_pipeline(MODEL, profile, options, for_local_run=for_local_run)


def summarize(summary: RunSummary) -> list[str]:
    """Data counts, KID of the trained and of an untrained generator, blessing, pushed version."""
    return images.summary_lines(
        summary, "KID {kid:.4f} (untrained generator {untrained_kid:.4f}; {kid_images} images, "
        "InceptionV3 at {kid_image_size} px)", MODEL.evaluator,
    )
