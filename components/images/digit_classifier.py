"""`DigitClassifierTrainer`: the digit classifier the GAN evaluator scores digit GANs with.

It trains `models.digit_classifier` on the labelled training split of a digit set (`mnist`,
`fashion_mnist` or a folder of IDX files, read by the same `sources.digits` reader as the
`ImageExampleGen`) and measures its accuracy on the official test split. Its only inputs are
parameters, so TFX's cache reuses the artifact in every later run of the same pipeline root with
the same parameters: the classifier is trained once per dataset and setting.

Output: a `Model` artifact holding the Keras classifier at `Format-Keras/digit_classifier.keras`
(`classifier_path`), with int/float/string properties `accuracy` (held out), `train_images`,
`eval_images`, `epochs`, `seed`, `train_seconds` and `dataset`. Image folders (CelebA) have no
labels and get no classifier.
"""

# No `from __future__ import annotations`: the @component decorator reads the real type hints.

import os
import time

from absl import logging
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import Model

from components.images.dataset import DATASET_HELP, check_dataset, is_digits
from models.digit_classifier import BATCH_SIZE, EPOCHS

KERAS_FILE = "digit_classifier.keras"
ACCURACY = "accuracy"


def classifier_path(model_uri: str) -> str:
    """Where the Keras classifier lives inside the `Model` artifact."""
    from components.images.data import KERAS_MODEL_DIR  # noqa: PLC0415 (imports TF Transform)

    return os.path.join(model_uri, KERAS_MODEL_DIR, KERAS_FILE)


def labelled_dataset(dataset: str) -> str:
    """`dataset` when it has labelled digits; a ValueError naming the allowed values otherwise."""
    dataset = check_dataset(dataset, must_exist=False)
    if not is_digits(dataset):
        raise ValueError(
            f"dataset {dataset!r} has no labelled digits, so no digit classifier; allowed: "
            f"'mnist', 'fashion_mnist' or a folder of MNIST-style IDX files (of {DATASET_HELP})"
        )
    return dataset


def train_and_save(
    model_uri: str, dataset: str, *, max_images: int, epochs: int, batch_size: int, seed: int
) -> dict:
    """Trains the classifier on (at most `max_images`, 0: all) training digits, saves it under
    `model_uri` and returns its properties (held-out accuracy on as many test digits)."""
    import tensorflow as tf

    from models import digit_classifier
    from sources.digits import load_digits

    if max_images < 0:
        raise ValueError(f"max_images is {max_images}; allowed: 0 (every image) or more")
    dataset = labelled_dataset(dataset)
    train, test = load_digits(dataset, "train"), load_digits(dataset, "test")
    limit = max_images or None
    started = time.monotonic()
    classifier = digit_classifier.train_classifier(
        train.images[:limit], train.labels[:limit], epochs=epochs, batch_size=batch_size,
        seed=seed,
    )
    seconds = round(time.monotonic() - started, 1)
    held_out = digit_classifier.accuracy(classifier, test.images[:limit], test.labels[:limit])
    path = classifier_path(model_uri)
    tf.io.gfile.makedirs(os.path.dirname(path))
    classifier.save(path)
    properties = {
        ACCURACY: held_out,
        "train_images": len(train.images[:limit]),
        "eval_images": len(test.images[:limit]),
        "epochs": epochs,
        "seed": seed,
        "train_seconds": seconds,
        "dataset": dataset,
    }
    logging.info("Digit classifier for %s: %s", dataset, properties)
    return properties


@component
def DigitClassifierTrainer(  # noqa: N802 (TFX component names are classes)
    model: OutputArtifact[Model],
    dataset: Parameter[str] = "mnist",
    max_images: Parameter[int] = 0,
    epochs: Parameter[int] = EPOCHS,
    batch_size: Parameter[int] = BATCH_SIZE,
    seed: Parameter[int] = 0,
):
    """The digit classifier of `dataset` as a Model artifact (see the module docstring)."""
    from components.common.evaluation import set_properties

    properties = train_and_save(model.uri, dataset, max_images=max_images, epochs=epochs,
                                batch_size=batch_size, seed=seed)
    set_properties(model, properties)
    print(f"  digit classifier ({dataset}): held-out accuracy {properties[ACCURACY]:.4f} "
          f"after {properties['train_seconds']} s", flush=True)
