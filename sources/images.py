"""Image folders (CelebA layout: a folder of JPEG/PNG files), cropped and resized.

Faces are center-cropped to the target aspect ratio before resizing, as the chapter does, so they
are not distorted. Unreadable files are counted and skipped, never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# `check_image_folder` opens at most this many files looking for a readable one: a folder whose
# first 20 image files (sorted) all fail is refused before a pipeline starts.
CHECK_FILES = 20
# What reading a bad file raises: PIL's OSError/UnidentifiedImageError/ValueError, and its
# DecompressionBombError (not an OSError) for a header declaring over 2 x MAX_IMAGE_PIXELS.
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)
log = logging.getLogger(__name__)


@dataclass
class FolderStats:
    """What a pass over a folder read and skipped."""

    read: int = 0
    skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)


def image_files(root: str | Path) -> list[Path]:
    """JPEG/PNG files under ``root`` (recursively), sorted for a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_image(path: str | Path, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """An image center-cropped to the aspect of ``size`` (height, width), resized: uint8 [H,W,C]."""
    if channels not in (1, 3):
        raise ValueError(f"channels={channels} unsupported; allowed: 1 or 3")
    height, width = size
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        fitted = ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC)
    array = np.asarray(fitted, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def iter_image_folder(
    root: str | Path,
    size: tuple[int, int] = (64, 64),
    channels: int = 3,
    stats: FolderStats | None = None,
    limit: int | None = None,
) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield ``(path, image)`` for every readable image; unreadable ones go into ``stats``."""
    stats = stats if stats is not None else FolderStats()
    for path in image_files(root):
        if limit is not None and stats.read >= limit:
            return
        try:
            image = load_image(path, size, channels)
        except UNREADABLE as error:
            stats.skipped += 1
            stats.skipped_files.append(str(path))
            log.warning("skipping unreadable image %s: %s", path, error)
            continue
        stats.read += 1
        yield path, image


def check_image_folder(root: str | Path, tries: int = CHECK_FILES) -> Path:
    """The first readable image of ``root`` (its header and pixels decode), trying at most
    ``tries`` files in sorted order. ValueError naming the folder when it holds no image file,
    or naming the files tried and their errors when none of them is readable."""
    files = image_files(root)
    if not files:
        raise ValueError(f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    problems = []
    for path in files[:tries]:
        try:
            with Image.open(path) as image:
                image.load()
            return path
        except UNREADABLE as error:
            problems.append(f"{path.name}: {error}")
    every = "all" if len(files) <= tries else f"the first {tries} of"
    raise ValueError(f"image folder {root}: {every} {len(files)} image files are unreadable "
                     f"({'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''})")
