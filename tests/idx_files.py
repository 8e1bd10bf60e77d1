"""Writing MNIST-style IDX files for tests (the format `sources.digits` reads)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """`array` as an IDX file of unsigned bytes; gzipped when `path` ends in .gz (the MNIST
    download's format), plain otherwise."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
