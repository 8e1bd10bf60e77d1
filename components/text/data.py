"""Reading Transform's output for the LM: (inputs, targets) batches, token counts, vocabulary."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from components.text.transform import INPUTS, TARGETS, VOCABULARY_NAME
from models.text.standardize import PAD_ID, vocabulary_with_specials

SHUFFLE_BUFFER = 10_000
# The Trainer keeps the Keras model beside the SavedModel (TFX names the latter Format-Serving)
# so that the evaluation component can score it with the same `perplexity` code as the baseline.
KERAS_MODEL_DIR = "Format-Keras"
KERAS_MODEL_FILE = "lm.keras"


def keras_model_path(model_uri: str) -> str:
    """Where the Trainer saves the Keras LM inside a Model artifact."""
    return os.path.join(model_uri, KERAS_MODEL_DIR, KERAS_MODEL_FILE)


def vocabulary(transform_output: tft.TFTransformOutput) -> list[str]:
    """The id -> word list: padding, [UNK], then the vocabulary file's words."""
    words = transform_output.vocabulary_by_name(VOCABULARY_NAME)
    return vocabulary_with_specials([word.decode("utf-8") for word in words])


def lm_dataset(
    file_patterns: list[str],
    transform_output: tft.TFTransformOutput,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of (inputs, targets) int64 [B, L] from transformed gzipped TFRecords; shuffled
    when `shuffle_seed` is given (the order is then reproducible)."""
    files = sorted(path for pattern in file_patterns for path in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_patterns}")
    feature_spec = transform_output.transformed_feature_spec()
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle_seed is not None:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed)
    if repeat:
        dataset = dataset.repeat()

    def parse(records: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_example(records, feature_spec)
        return features[INPUTS], features[TARGETS]

    return dataset.batch(batch_size).map(parse).prefetch(tf.data.AUTOTUNE)


def target_counts(dataset: tf.data.Dataset, vocab_size: int) -> np.ndarray:
    """How often each token id is a (non-padding) target: the unigram baseline's counts."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for _, targets in dataset:
        counts += np.bincount(targets.numpy().ravel(), minlength=vocab_size)
    counts[PAD_ID] = 0
    return counts
