"""Images on the client side: PNG bytes from the server as numpy or PIL, inputs as bytes, grids."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class GeneratedImage:
    """An image a signature returned as PNG bytes, and the model version that made it."""

    png: bytes
    version: int | None = None

    def to_pil(self) -> Image.Image:
        image = Image.open(io.BytesIO(self.png))
        image.load()
        return image

    def to_numpy(self) -> np.ndarray:
        """uint8 array [H, W] (grayscale) or [H, W, C]."""
        return np.asarray(self.to_pil())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the image; ``.png`` keeps the server's bytes, other suffixes re-encode."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            path.write_bytes(self.png)
        else:
            self.to_pil().convert("RGB").save(path)
        return path


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W] / [H, W, 1|3|4] array, or floats in [0, 1]."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_bytes(image: Any) -> bytes:
    """Encoded image bytes from a path, encoded bytes, a PIL image or a numpy array."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        return path.read_bytes()
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(image, np.ndarray):
        return encode_png(image)
    raise TypeError(
        f"image must be a path, encoded bytes, a PIL image or a numpy array, not {type(image)}"
    )


def grid(images: Sequence[GeneratedImage], columns: int | None = None, pad: int = 2) -> bytes:
    """PNG of ``images`` tiled row by row (square-ish by default) with ``pad`` pixels between."""
    if not images:
        raise ValueError("grid needs at least one image")
    tiles = [image.to_pil().convert("RGB") for image in images]
    width, height = tiles[0].size
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new(
        "RGB", (columns * width + (columns - 1) * pad, rows * height + (rows - 1) * pad), "white"
    )
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        sheet.paste(tile, (column * (width + pad), row * (height + pad)))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
