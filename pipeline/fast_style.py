"""`genpipe run fast-style [--style IMAGE]`: the fast style network trained on content photos."""

from __future__ import annotations

from typing import Any

from pipeline.dream_style import build_fast_style_pipeline, summarize_fast_style
from pipeline.runner import RunOptions

summarize = summarize_fast_style


def build_pipeline(options: RunOptions, *, for_local_run: bool = True,
                   style: str | None = None) -> Any:
    return build_fast_style_pipeline(options, for_local_run=for_local_run, style=style)
