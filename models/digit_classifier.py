"""A small digit classifier and the two scores TF-GAN uses to judge generated MNIST digits.

ImageNet features (KID on InceptionV3) say little about 28x28 grayscale digits, so for digit
sets a GAN is also scored with a classifier trained on the digits themselves:

- the **classifier score**, the Inception score with the digit classifier in InceptionV3's place
  (Salimans et al., 2016): exp(E_x[KL(p(y|x) || p(y))]) over generated images x, where p(y) is
  the mean prediction. It is 1 when every image gets the same prediction and at most the number
  of classes (10) when each image is one confident class and the classes are equally frequent;
- the **Fréchet distance** between Gaussians fitted to the classifier's penultimate-layer
  features of held-out real images and of generated images (FID, Heusel et al., 2017, in this
  feature space): ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)). Lower is better; 0 for
  identical feature distributions.

The classifier is the keras.io "Simple MNIST convnet" shape (two 3x3 conv + max-pool blocks)
with a 128-unit dense layer before the softmax: the features the Fréchet distance compares, a
size whose covariance 1,000 images estimate reasonably (the flattened conv map has 1,600).
Images are float32 [N, 28, 28, 1] in [0, 1], the scale of Transform's output.
"""

from __future__ import annotations

import keras
import numpy as np
import scipy.linalg
from keras import layers

__all__ = [
    "BATCH_SIZE",
    "EPOCHS",
    "FEATURES_LAYER",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "accuracy",
    "build_classifier",
    "classifier_score",
    "features_and_predictions",
    "frechet_distance",
    "train_classifier",
]

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
FEATURES_LAYER = "features"  # the penultimate layer: what the Fréchet distance compares
FEATURE_SIZE = 128
EPSILON = 1e-12  # keeps log(0) out of the classifier score
EPOCHS = 2  # all 60,000 MNIST digits: 98.4% held-out accuracy (measured: 50-90 s, 2 busy cores)
BATCH_SIZE = 128


def build_classifier(
    image_shape: tuple[int, int, int] = IMAGE_SHAPE, num_classes: int = NUM_CLASSES
) -> keras.Model:
    """Images in [0, 1] -> class probabilities: two conv/pool blocks, a 128-unit feature layer."""
    inputs = keras.Input(shape=image_shape, name="images")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(FEATURE_SIZE, activation="relu", name=FEATURES_LAYER)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="digit_classifier")


def _as_images(images: np.ndarray) -> np.ndarray:
    """float32 [N, 28, 28, 1] in [0, 1] from uint8 or float, [N, H, W] or [N, H, W, 1]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    if images.ndim == 3:
        images = images[..., None]
    return images.astype(np.float32, copy=False)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = 1e-3,
    seed: int = 0,
    verbose: int = 2,
) -> keras.Model:
    """A classifier fit on `images` (see `_as_images`) and int labels 0..9, seeded."""
    if epochs < 1:
        raise ValueError(f"epochs is {epochs}; allowed: an integer >= 1")
    images, labels = _as_images(images), np.asarray(labels, np.int64)
    if len(images) != len(labels) or not len(images):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) must be as many, > 0")
    keras.utils.set_random_seed(seed)
    classifier = build_classifier(images.shape[1:])
    classifier.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    classifier.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True,
                   verbose=verbose)
    return classifier


def features_and_predictions(
    classifier: keras.Model, images: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features [N, 128], class probabilities [N, 10]) of `images`, float64."""
    both = keras.Model(
        classifier.inputs, [classifier.get_layer(FEATURES_LAYER).output, classifier.outputs[0]]
    )
    features, probabilities = both.predict(_as_images(images), batch_size=batch_size, verbose=0)
    return features.astype(np.float64), probabilities.astype(np.float64)


def accuracy(classifier: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of `images` whose most probable class is their label."""
    _, probabilities = features_and_predictions(classifier, images)
    return float(np.mean(probabilities.argmax(axis=1) == np.asarray(labels)))


def classifier_score(probabilities: np.ndarray) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]) of class probabilities [N, classes] (rows sum to 1)."""
    p_y_given_x = np.asarray(probabilities, np.float64)
    if p_y_given_x.ndim != 2 or not len(p_y_given_x):
        raise ValueError(f"probabilities must be [N, classes] with N > 0, got "
                         f"{p_y_given_x.shape}")
    p_y = p_y_given_x.mean(axis=0)
    # 0 log 0 = 0: the terms of classes an image gives no probability vanish.
    kl = np.sum(
        p_y_given_x * (np.log(p_y_given_x + EPSILON) - np.log(p_y + EPSILON)), axis=1
    )
    return float(np.exp(kl.mean()))


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, d] (N >= 2 each).

    The matrix square root is scipy's `sqrtm` (scipy is in the runtime lock). The product of two
    covariances is not symmetric, and near-singular covariances (dead ReLU units, few images)
    can give a slightly complex or non-finite root; then, as the reference FID code does, a
    small multiple of the identity is added to both covariances and tiny imaginary parts dropped.
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or a.shape[1:] != b.shape[1:] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"feature sets must be [N, d] with the same d and N >= 2, got "
                         f"{a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = np.eye(len(cov_a)) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    distance = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root)
    return float(max(distance, 0.0))  # rounding can leave a tiny negative for equal sets
