"""`deepdream`: the chapter's DeepDream on an ImageNet InceptionV3 (defaults are the book's)."""

from __future__ import annotations

from contracts.spec import Contract, Signature, Tensor

MODEL = "deepdream"

LIMITS = {
    # Pixels of the image and of every octave the dream computes from it.
    "max_pixels": 1024 * 1024,
    "max_iterations": 100,
    # Dreams per request: a default dream of a 1-megapixel image is minutes of CPU, and a
    # request runs its rows one after the other; more dreams go in more requests.
    "max_batch_size": 8,
}
# Octaves are never smaller than this side (scaled up, aspect kept): at 139 px the mixed4..7
# maps are 7x7, 3x3 once the loss drops their 2-pixel border; below 107 px nothing would remain.
MIN_OCTAVE_SIDE = 139


def largest_octave(height: int, width: int) -> tuple[int, int]:
    """(height, width) of the largest image a dream of a height x width image computes: the
    image itself, scaled up when its short side is under MIN_OCTAVE_SIDE (a 1x300 image dreams
    at 139x41700)."""
    factor = max(1.0, MIN_OCTAVE_SIDE / max(1, min(height, width)))
    return int(height * factor), int(width * factor)


DREAM = Signature(
    "dream",
    (
        Tensor(
            "image",
            "string",
            doc=f"JPEG or PNG; it and every octave at most max_pixels (octaves are at least "
            f"{MIN_OCTAVE_SIDE} px on the short side)",
        ),
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
    computed_size={"image": largest_octave},
)

CONTRACT = Contract(MODEL, (DREAM,), LIMITS, doc="DeepDream on InceptionV3")
