"""`genpipe run dream`: DeepDream exported from ImageNet InceptionV3 (see pipeline.dream_style)."""

from __future__ import annotations

from typing import Any

from pipeline.dream_style import build_pretrained_pipeline, summarize_pretrained
from pipeline.runner import RunOptions

MODEL_NAME = "deepdream"
summarize = summarize_pretrained


def build_pipeline(options: RunOptions, *, for_local_run: bool = True) -> Any:
    return build_pretrained_pipeline(MODEL_NAME, options, for_local_run=for_local_run)
