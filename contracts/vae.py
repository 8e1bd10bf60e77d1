"""`vae`: the convolutional variational autoencoder (2-D latent space on MNIST by default).

Images are float32 [B, H, W, C] in [0, 1]; D is the latent size. PNG outputs end in `_bytes`.
"""

from __future__ import annotations

from contracts.spec import ANY, SEED_MAX, Contract, Signature, Tensor

MODEL = "vae"

LIMITS = {
    "max_batch": 64,
    "max_grid": 30,  # latent_grid n in [2, max_grid]
    "max_grid_cells": 3600,  # latent_grid: sum of n * n over the batch (decoder calls)
    "max_extent": 4.0,  # latent_grid extent in (0, max_extent]
    "max_steps": 16,  # interpolate steps in [2, max_steps]
    "max_strength": 4.0,  # edit strength in [-max_strength, max_strength]
}

IMAGES = Tensor(
    "images", "float32", (ANY, ANY, ANY, ANY), doc="[B, H, W, C] in [0, 1]", low=0.0, high=1.0
)
PNG = Tensor("png_bytes", "string", doc="PNG of each image")
Z = Tensor("z", "float32", (ANY, ANY), doc="latent points [B, D]")

DECODE = Signature("decode", (Z,), (IMAGES, PNG), doc="decode latent points")
ENCODE = Signature(
    "encode",
    (IMAGES,),
    (Tensor("z_mean", "float32", (ANY, ANY)), Tensor("z_log_var", "float32", (ANY, ANY))),
    doc="the encoder's posterior of each image",
)
SAMPLE = Signature(
    "sample",
    (Tensor("seed", "int64", default=0, low=0, high=SEED_MAX),),
    (IMAGES, PNG, Z),
    doc="decode a standard-normal latent point drawn from each seed",
)
LATENT_GRID = Signature(
    "latent_grid",
    (
        Tensor("n", "int32", doc="grid side", default=15, low=2, high="max_grid"),
        Tensor(
            "extent",
            "float32",
            doc="grid spans [-extent, extent]^2",
            default=1.0,
            low=0.0,
            high="max_extent",
            low_open=True,
        ),
    ),
    (PNG,),
    doc="the chapter's n x n grid of decoded latent points (2-D latent space)",
)
INTERPOLATE = Signature(
    "interpolate",
    (
        Tensor("z_a", "float32", (ANY, ANY)),
        Tensor("z_b", "float32", (ANY, ANY)),
        Tensor("steps", "int32", default=8, low=2, high="max_steps"),
    ),
    (
        Tensor("png_bytes", "string", doc="a strip of steps images"),
        Tensor("images", "float32", (ANY, ANY, ANY, ANY, ANY), doc="[B, steps, H, W, C]"),
    ),
    doc="decode points on the line from z_a to z_b",
)
EDIT = Signature(
    "edit",
    (
        IMAGES,
        Tensor("from_label", "int32", doc="a class label seen in training", default=0, low=0),
        Tensor("to_label", "int32", default=1, low=0),
        Tensor("strength", "float32", default=1.0, low="-max_strength", high="max_strength"),
    ),
    (IMAGES, PNG),
    doc="move each image's code along the concept vector mean[to_label] - mean[from_label]",
    optional=True,
)

CONTRACT = Contract(
    MODEL,
    (DECODE, ENCODE, SAMPLE, LATENT_GRID, INTERPOLATE, EDIT),
    LIMITS,
    doc="convolutional VAE: decode, encode, sample, latent grids, concept vectors",
)
