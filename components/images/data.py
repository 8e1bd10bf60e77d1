"""Reading Transform's output for the image generators: batches of images (and labels), arrays,
and where a Trainer keeps its Keras model for the evaluation component."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from components.images.transform import IMAGE, LABEL

SHUFFLE_BUFFER = 10_000
# The Trainer keeps the Keras model beside the SavedModel (TFX names the latter Format-Serving)
# so that the evaluation component scores exactly what was trained.
KERAS_MODEL_DIR = "Format-Keras"


def keras_model_path(model_uri: str, filename: str) -> str:
    """Where a Trainer saves a Keras model (`vae.keras`, `generator.keras`) in a Model artifact."""
    return os.path.join(model_uri, KERAS_MODEL_DIR, filename)


def model_uri_of(serving_model_dir: str) -> str:
    """The Model artifact's folder, from the Trainer's `fn_args.serving_model_dir`."""
    return os.path.dirname(serving_model_dir.rstrip("/"))


def split_files(examples_uri: str, split: str) -> list[str]:
    """The file pattern of one split of an Examples artifact (TFX's `Split-<name>` layout)."""
    return [os.path.join(examples_uri, f"Split-{split}", "*")]


def has_labels(transform_output: tft.TFTransformOutput) -> bool:
    return LABEL in transform_output.transformed_feature_spec()


def image_shape(transform_output: tft.TFTransformOutput) -> tuple[int, int, int]:
    """(height, width, channels) of the transformed `image` feature."""
    return tuple(int(size) for size in transform_output.transformed_feature_spec()[IMAGE].shape)


def image_dataset(
    file_patterns: list[str],
    transform_output: tft.TFTransformOutput,
    batch_size: int,
    *,
    with_labels: bool = False,
    shuffle_seed: int | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of images float32 [B, H, W, C] (or (images, labels int64 [B])) from transformed
    gzipped TFRecords; shuffled reproducibly when `shuffle_seed` is given."""
    files = sorted(path for pattern in file_patterns for path in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_patterns}")
    feature_spec = transform_output.transformed_feature_spec()
    if with_labels and LABEL not in feature_spec:
        raise ValueError("with_labels=True but the transformed examples have no 'label'")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    # A known length: Keras 3 otherwise averages an empty last step into custom loss trackers
    # (the VAE's validation loss read about 1/6 too low on 5 batches).
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(count_records(files)))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed)
    if repeat:
        dataset = dataset.repeat()

    def parse(records: tf.Tensor):
        features = tf.io.parse_example(records, feature_spec)
        return (features[IMAGE], features[LABEL]) if with_labels else features[IMAGE]

    return dataset.batch(batch_size).map(parse).prefetch(tf.data.AUTOTUNE)


def count_records(files: list[str]) -> int:
    """The number of records in gzipped TFRecord files (one pass, no parsing)."""
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


def load_images(
    file_patterns: list[str],
    transform_output: tft.TFTransformOutput,
    *,
    max_images: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The first `max_images` (all when 0) images as a float32 array, and their labels (or None)."""
    labelled = has_labels(transform_output)
    dataset = image_dataset(file_patterns, transform_output, 1024, with_labels=labelled)
    if max_images:
        dataset = dataset.unbatch().take(max_images).batch(1024)
    images, labels = [], []
    for batch in dataset:
        if labelled:
            images.append(batch[0].numpy())
            labels.append(batch[1].numpy())
        else:
            images.append(batch.numpy())
    if not images:
        raise ValueError(f"no images in {file_patterns}")
    return np.concatenate(images), (np.concatenate(labels) if labelled else None)
