"""Export settings of the models built from ImageNet weights (no TensorFlow or TFX import):
the keyword arguments `components.pretrained.export.ExportPretrainedModel` passes to the
exporter. Request values come from the contracts; these are export limits."""

from __future__ import annotations

import dataclasses
from typing import Any

from contracts import deepdream, style_transfer

# The chapter's DeepDream layer contributions (DLwP 12.2).
CHAPTER_DREAM_LAYERS = (("mixed4", 1.0), ("mixed5", 1.5), ("mixed6", 2.0), ("mixed7", 2.5))


@dataclasses.dataclass(frozen=True)
class DreamExportSettings:
    """DeepDream (DLwP 12.2) export."""

    weights: str = "imagenet"  # models.pretrained: imagenet (offline: packaged) | packaged | none
    layer_weights: tuple[tuple[str, float], ...] = CHAPTER_DREAM_LAYERS
    max_pixels: int = deepdream.LIMITS["max_pixels"]  # export limits of the `dream` signature
    max_iterations: int = deepdream.LIMITS["max_iterations"]

    def kwargs(self) -> dict[str, Any]:
        """The exporter's keyword arguments (layer weights as a {layer: weight} mapping)."""
        return {**dataclasses.asdict(self), "layer_weights": dict(self.layer_weights)}


@dataclasses.dataclass(frozen=True)
class StyleExportSettings:
    """Gatys style transfer (DLwP 12.3) export."""

    weights: str = "imagenet"
    max_height: int = style_transfer.LIMITS["max_height"]  # export limits of `transfer`
    max_iterations: int = style_transfer.LIMITS["max_iterations"]
    max_pixels: int = style_transfer.LIMITS["max_pixels"]

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
