"""Settings of the fast style network pipeline's components, declared once (no TensorFlow or
TFX import). `pipeline.profiles` composes them into a `FastStyleProfile`."""

from __future__ import annotations

import dataclasses

from contracts import fast_style


@dataclasses.dataclass(frozen=True)
class PhotoSettings:
    """Keyword arguments of `components.fast_style.photos.ContentPhotoGen`."""

    crop_size: int = 256
    crops_per_photo: int = 8
    scale_side: int = 320  # photos are scaled to this shorter side before cropping
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class FastStyleSettings:
    """`custom_config` of the Trainer (`components.fast_style.trainer.run_fn`): network size,
    losses and schedule; `style` is set per run (`genpipe run fast-style --style`)."""

    style: str = "starry_night"
    style_size: int = 256  # the style image's longer side during training
    weights: str = "imagenet"
    filters: tuple[int, int, int] = (32, 64, 128)
    num_residual_blocks: int = 5
    batch_size: int = 4
    learning_rate: float = 1e-3
    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 1.0
    max_pixels: int = fast_style.LIMITS["max_pixels"]
    seed: int = 0
