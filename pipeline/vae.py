"""The VAE pipeline (DLwP 12.4): `genpipe run vae` (see `pipeline.images` for the components)."""

from __future__ import annotations

from typing import Any

from pipeline import images
from pipeline.profiles import VAE_PROFILES, get_profile
from pipeline.runner import RunOptions, RunSummary

MODEL = images.VAE
MODEL_NAME = MODEL.name  # the serving name (`contracts.vae`)


def build_pipeline(options: RunOptions, *, for_local_run: bool = True) -> Any:
    """The VAE pipeline for `genpipe run vae` options (`options.source` is the dataset)."""
    profile = get_profile(VAE_PROFILES, options.profile)
    return images.build_pipeline(MODEL, profile, options, for_local_run=for_local_run)


def summarize(summary: RunSummary) -> list[str]:
    """Data counts, held-out negative ELBO, blessing and pushed version of a run."""
    return images.summary_lines(
        summary, "held-out negative ELBO {negative_elbo:.1f} nats per image "
        "({eval_images} images)", MODEL.evaluator,
    )
