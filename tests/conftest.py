"""Shared test setup: quiet TensorFlow logs; fixtures shared across test modules live here."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Session fixtures: each smoke pipeline runs once per test session and many tests read its outputs.
# Imported by module name: pytorch-widedeep installs a top-level `tests` package shadowing ours.
from fixtures_dream_style import dream_style_smoke_root, fast_style_smoke_root  # noqa: E402, F401
from fixtures_images import gan_smoke_run, image_pipelines_root, vae_smoke_run  # noqa: E402, F401
from fixtures_text import text_smoke_run  # noqa: E402, F401
