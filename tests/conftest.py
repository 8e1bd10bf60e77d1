"""Shared test setup: quiet TensorFlow logs; fixtures shared across test modules live here."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
