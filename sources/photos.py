"""Photos and paintings for DeepDream and style transfer, all available offline.

Photos come from ``skimage.data`` (bundled) and the darknet sample photos that setup extracts;
paintings (Starry Night, The Scream) come from Debian extras, with CC0 skimage textures as the
fallback when those are absent.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from sources._carriers import EXTRAS_INSTALL, MissingAssetError, assets_dir

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")
DARKNET_PHOTOS = ("dog", "eagle", "giraffe", "horses", "person", "kite")
PAINTINGS = ("starry_night", "scream")
TEXTURES = ("brick", "grass", "gravel")
log = logging.getLogger(__name__)


def _rgb(array: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] whatever the source's channels."""
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3]).astype(np.uint8)


def _read(path: Path) -> np.ndarray:
    """uint8 [H, W, 3]; a ValueError naming the file for a header declaring too many pixels
    (PIL's DecompressionBombError is no ValueError or OSError, what callers skip)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path}: {error}") from None


def photo(name: str) -> np.ndarray:
    """A bundled photo as uint8 [H, W, 3]: a skimage photo, a darknet photo or an image path."""
    if name in SKIMAGE_PHOTOS:
        import skimage.data

        return _rgb(getattr(skimage.data, name)())
    if name in DARKNET_PHOTOS:
        path = assets_dir() / "photos" / f"{name}.jpg"
        if not path.is_file():
            raise MissingAssetError(
                f"photo {name!r} not extracted at {path}; run: {EXTRAS_INSTALL}"
            )
        return _read(path)
    if Path(name).is_file():
        return _read(Path(name))
    raise ValueError(
        f"photo {name!r} unknown; allowed: {list(SKIMAGE_PHOTOS + DARKNET_PHOTOS)} or an image path"
    )


def texture(name: str) -> np.ndarray:
    """A CC0 skimage texture (gray, repeated to RGB)."""
    if name not in TEXTURES:
        raise ValueError(f"texture {name!r} unknown; allowed: {list(TEXTURES)}")
    import skimage.data

    return _rgb(getattr(skimage.data, name)())


def painting_path(name: str) -> Path:
    """Where setup puts a painting (it may be absent)."""
    return assets_dir() / "paintings" / f"{name}.jpg"


def painting(name: str, fallback: str | None = "brick") -> np.ndarray:
    """A painting as uint8 [H, W, 3]; if absent, the ``fallback`` texture with a notice."""
    if name in TEXTURES:
        return texture(name)
    if name not in PAINTINGS:
        if Path(name).is_file():
            return _read(Path(name))
        raise ValueError(
            f"painting {name!r} unknown; allowed: {list(PAINTINGS + TEXTURES)} or an image path"
        )
    path = painting_path(name)
    if path.is_file():
        return _read(path)
    if fallback is None:
        raise MissingAssetError(f"painting {name!r} not extracted at {path}; run: {EXTRAS_INSTALL}")
    log.warning("painting %r absent (%s); using the %r texture instead", name, path, fallback)
    return texture(fallback)
