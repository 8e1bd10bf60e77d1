"""`fast_style_<style>`: a feed-forward stylizer trained from the Gatys loss (one per style)."""

from __future__ import annotations

from contracts.spec import Contract, Signature, Tensor

PREFIX = "fast_style_"
MODEL = PREFIX + "<style>"

LIMITS = {"max_pixels": 2**22, "min_side": 4}

STYLIZE = Signature(
    "stylize",
    (Tensor("image", "string", doc="JPEG or PNG, sides at least min_side"),),
    (Tensor("image_bytes", "string", doc="the stylized image, PNG, same size"),),
    doc="one forward pass of the trained transformation network",
)

CONTRACT = Contract(MODEL, (STYLIZE,), LIMITS, doc="Johnson et al. fast style network")


def model_name(style: str) -> str:
    """The served model name of a style: `fast_style_<style>`."""
    if not style or not style.replace("_", "").isalnum():
        raise ValueError(f"style must be letters, digits and _; got {style!r}")
    return PREFIX + style
