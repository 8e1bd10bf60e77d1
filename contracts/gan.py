"""`gan`: the DCGAN generator. Images are uint8 [B, H, W, C]; PNG outputs end in `_bytes`."""

from __future__ import annotations

from contracts.spec import ANY, SEED_MAX, Contract, Signature, Tensor

MODEL = "gan"

LIMITS = {"max_batch": 64}

IMAGES = Tensor("images", "uint8", (ANY, ANY, ANY, ANY), doc="[B, H, W, C]")
PNG = Tensor("png_bytes", "string", doc="PNG of each image")

GENERATE = Signature(
    "generate",
    (Tensor("seed", "int64", default=0, low=0, high=SEED_MAX),),
    (IMAGES, PNG),
    doc="one image from the standard-normal latent point drawn from each seed",
    also_as=("serving_default",),
)
DECODE = Signature(
    "decode",
    (Tensor("z", "float32", (ANY, ANY), doc="latent points [B, latent_dim]"),),
    (IMAGES, PNG),
    doc="one image per latent point",
)

CONTRACT = Contract(MODEL, (GENERATE, DECODE), LIMITS, doc="DCGAN generator")
