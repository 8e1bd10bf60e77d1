"""`deepdream`: the chapter's DeepDream on an ImageNet InceptionV3 (defaults are the book's)."""

from __future__ import annotations

from contracts.spec import Contract, Signature, Tensor

MODEL = "deepdream"

LIMITS = {"max_pixels": 1024 * 1024, "max_iterations": 100}

DREAM = Signature(
    "dream",
    (
        Tensor("image", "string", doc="JPEG or PNG (at most max_pixels)"),
        Tensor(
            "iterations",
            "int32",
            doc="gradient-ascent steps per octave",
            default=30,
            low=1,
            high="max_iterations",
        ),
        Tensor("octaves", "int32", default=3, low=1, high=8),
        Tensor("octave_scale", "float32", default=1.4, low=1.0, high=4.0),
        Tensor(
            "step", "float32", doc="gradient-ascent step size", default=20.0, low=0.0, high=1000.0
        ),
        Tensor(
            "max_loss",
            "float32",
            doc="stop an octave early above it; 0 = never",
            default=15.0,
            low=0.0,
            high=1e6,
        ),
    ),
    (Tensor("image_bytes", "string", doc="the dream, PNG, same size"),),
    doc="DeepDream an image: multi-layer loss, octaves, detail reinjection",
)

CONTRACT = Contract(MODEL, (DREAM,), LIMITS, doc="DeepDream on InceptionV3")
