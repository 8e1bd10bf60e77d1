"""`style_transfer`: Gatys et al. neural style transfer on an ImageNet VGG19.

Defaults are the chapter's loss weights; the book runs 4000 iterations at height 400.
"""

from __future__ import annotations

from contracts.spec import Contract, Signature, Tensor

MODEL = "style_transfer"

LIMITS = {"max_height": 400, "max_iterations": 4000, "max_pixels": 2**24}
MIN_SIDE = 32  # VGG19 halves the image 4 times before block5_conv1
WEIGHT_RANGE = (0.0, 1e3)


def _weight(name: str, default: float) -> Tensor:
    return Tensor(name, "float32", default=default, low=WEIGHT_RANGE[0], high=WEIGHT_RANGE[1])


TRANSFER = Signature(
    "transfer",
    (
        Tensor("content", "string", doc="JPEG or PNG photo"),
        Tensor("style", "string", doc="JPEG or PNG painting"),
        Tensor("iterations", "int32", default=100, low=1, high="max_iterations"),
        Tensor(
            "height",
            "int32",
            doc="output height (width keeps the aspect)",
            default=400,
            low=MIN_SIDE,
            high="max_height",
        ),
        _weight("content_weight", 2.5e-8),
        _weight("style_weight", 1e-6),
        _weight("tv_weight", 1e-6),
    ),
    (
        Tensor("image_bytes", "string", doc="the stylized image, PNG"),
        Tensor("loss", "float32", doc="the final total loss"),
    ),
    doc="optimize an image to match the content's features and the style's Gram matrices",
)

CONTRACT = Contract(MODEL, (TRANSFER,), LIMITS, doc="Gatys style transfer on VGG19")
