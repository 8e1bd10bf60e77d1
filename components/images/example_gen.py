"""Image ingestion as a TFX ExampleGen: digits or an image folder -> tf.Examples, train/eval.

Each tf.Example holds
- `image`: the raw pixels, uint8, row-major [height, width, channels] (`ndarray.tobytes()`): no
  codec in the way, and Transform turns them into floats with one `tf.io.decode_raw`;
- `height`, `width`, `channels`: int64 shape of the pixels;
- `label`: int64 class, when the source has labels (digit sets do, image folders do not).

Splits are deterministic: digit sets keep their official split (train = the 60,000 training
images, eval = the 10,000 test images); an image folder is split 90/10 by a hash of each file's
relative path, and every image is center-cropped to the target aspect ratio and resized (as the
chapter prepares CelebA). Unreadable image files are counted and skipped. The Beam counters
`images_read`, `corrupt_images`, `examples_written` and `<split>_examples` become int custom
properties of the Examples artifact (`components.common.example_gen`).

Nothing grows with the data but file names: a folder is listed (names only), the names are
spread over the workers, then each file is read, decoded and written on its own; examples are
written without a shuffle (`components.common.example_gen`). Digit sets are arrays of a fixed,
packaged size, read by `sources.digits`.

`max_images` > 0 reads at most that many images of each source split (digits: the first ones of
train and of test; a folder: its first `max_images` files in sorted order, then split).
The component is driver-less: its cache key is the parameters, not the folder's content.
Building it checks a folder's IDX headers or first images (`check_dataset_files`), so a
folder the executor could not read is refused before any component runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.common.example_gen import CountingExampleGenExecutor, counter
from components.images.dataset import DIGIT_SHAPE, in_eval_split, is_digits
from components.schemas import MEAN_INTENSITY
from sources.digits import check_idx_dir, load_digits
from sources.images import UNREADABLE, check_image_folder, image_files, load_image

METRICS_NAMESPACE = "genpipe.image_example_gen"
IMAGE, HEIGHT, WIDTH, CHANNELS, LABEL = "image", "height", "width", "channels", "label"
# Output split -> the source split it reads (digit sets: the official train/test files).
SPLITS = (("train", "train"), ("eval", "test"))

Shape = tuple[int, int, int]


def _count(name: str, amount: int = 1) -> None:
    counter(METRICS_NAMESPACE, name).inc(amount)


def image_example(pixels: np.ndarray, label: int | None = None) -> tf.train.Example:
    """A tf.Example of uint8 pixels [H, W, C] (raw bytes + shape), an optional label, and the
    mean intensity in [0, 1] that drift detection compares run to run."""
    height, width, channels = pixels.shape

    def ints(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    features = {
        IMAGE: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(pixels, np.uint8).tobytes()])
        ),
        HEIGHT: ints(height),
        WIDTH: ints(width),
        CHANNELS: ints(channels),
        MEAN_INTENSITY: tf.train.Feature(
            float_list=tf.train.FloatList(value=[float(pixels.mean()) / 255.0])),
    }
    if label is not None:
        features[LABEL] = ints(label)
    _count("examples_written")
    return tf.train.Example(features=tf.train.Features(feature=features))


def read_digits(
    split: str, dataset: str, max_images: int, shape: Shape
) -> Iterator[tf.train.Example]:
    """The digits of one official split (`train` or `test`) of `dataset`, as tf.Examples."""
    if tuple(shape) != DIGIT_SHAPE:
        raise ValueError(f"image_shape {tuple(shape)} does not fit {dataset!r}: digit sets are "
                         f"{DIGIT_SHAPE}")
    digits = load_digits(dataset, split)
    count = min(len(digits), max_images) if max_images else len(digits)
    _count("images_read", count)
    for index in range(count):
        yield image_example(digits.images[index][..., None], int(digits.labels[index]))


def folder_split_files(root: str, split: str, max_images: int) -> list[str]:
    """Relative paths of the folder's image files that belong to `split` (`train` or `test`)."""
    files = [os.path.relpath(path, root) for path in image_files(root)]
    if max_images:
        files = files[:max_images]
    return [path for path in files if in_eval_split(path) == (split == "test")]


def read_image_file(relative_path: str, root: str, shape: Shape) -> Iterator[tf.train.Example]:
    """One image file, cropped and resized to `shape`; nothing (counted) when unreadable."""
    _count("images_read")
    height, width, channels = shape
    try:
        pixels = load_image(os.path.join(root, relative_path), (height, width), channels)
    except UNREADABLE as error:
        _count("corrupt_images")
        logging.warning("Skipping unreadable image %s: %s", relative_path, error)
        return
    yield image_example(pixels)


def check_dataset_files(dataset: str) -> None:
    """Refuses, before any component runs, a dataset folder the executor could not read: an IDX
    folder whose headers are wrong (`sources.digits.check_idx_dir`), an image folder with no
    readable image among its first files (`sources.images.check_image_folder`). Reads headers
    and at most a few images; ValueError naming the file. Named digit sets are not checked."""
    if not os.path.isdir(dataset):
        return
    try:
        if is_digits(dataset):
            check_idx_dir(dataset)
        else:
            check_image_folder(dataset)
    except FileNotFoundError as error:  # an IDX file missing (MissingAssetError)
        raise ValueError(str(error)) from None


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def ImagesToExample(  # noqa: N802 (Beam PTransform naming)
    pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str
) -> beam.PCollection:
    """The tf.Examples of one source split (`split_pattern`: `train` or `test`)."""
    dataset = exec_properties["dataset"]
    max_images = int(exec_properties.get("max_images") or 0)
    shape = tuple(int(exec_properties[name]) for name in ("image_height", "image_width",
                                                           "image_channels"))
    if is_digits(dataset):
        return (
            pipeline
            | "Split" >> beam.Create([split_pattern])
            | "ReadDigits" >> beam.FlatMap(read_digits, dataset, max_images, shape)
        )
    if not os.path.isdir(dataset):
        raise FileNotFoundError(f"dataset folder {dataset} does not exist")
    return (
        pipeline
        | "Folder" >> beam.Create([dataset])
        | "ListFiles" >> beam.FlatMap(folder_split_files, split_pattern, max_images)
        | "Spread" >> beam.Reshuffle()
        | "ReadImages" >> beam.FlatMap(read_image_file, dataset, shape)
    )


class Executor(CountingExampleGenExecutor):
    """ExampleGen executor for digit sets and image folders (counters on the artifact)."""

    METRICS_NAMESPACE = METRICS_NAMESPACE
    COUNTERS = ("images_read", "corrupt_images", "examples_written")

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX API)
        return ImagesToExample

    def after_counting(self, counts: dict[str, int], exec_properties: dict[str, Any]) -> None:
        """Fail when a split came out empty, saying what was read."""
        empty = [name for name, _ in SPLITS if not counts[f"{name}_examples"]]
        if empty:
            raise ValueError(
                f"dataset {exec_properties['dataset']!r} gave no {' and no '.join(empty)} "
                f"examples ({counts['images_read']} images read, "
                f"{counts['corrupt_images']} unreadable); "
                "an image folder needs enough readable images for a 90/10 split"
            )

    def string_properties(self, exec_properties: dict[str, Any]) -> dict[str, str]:
        shape = "x".join(str(exec_properties[name]) for name in ("image_height", "image_width",
                                                                  "image_channels"))
        return {"source": exec_properties["dataset"], "image_shape": shape}


class ImageExampleGenSpec(types.ComponentSpec):
    """Parameters of `ImageExampleGen` (the last four are the ones every ExampleGen reads)."""

    PARAMETERS = {
        "dataset": ExecutionParameter(type=str),
        "max_images": ExecutionParameter(type=int, optional=True),
        "image_height": ExecutionParameter(type=int),
        "image_width": ExecutionParameter(type=int),
        "image_channels": ExecutionParameter(type=int),
        "input_config": ExecutionParameter(type=example_gen_pb2.Input),
        "output_config": ExecutionParameter(type=example_gen_pb2.Output),
        "output_data_format": ExecutionParameter(type=int),
        "output_file_format": ExecutionParameter(type=int),
    }
    INPUTS: dict[str, ChannelParameter] = {}
    OUTPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}


class ImageExampleGen(base_beam_component.BaseBeamComponent):
    """Images as tf.Examples (`image` raw uint8 bytes, `height`, `width`, `channels`, `label`),
    split train/eval deterministically (see the module docstring).

    `dataset` is `mnist`, `fashion_mnist`, a folder of IDX files or an image folder
    (`components.images.dataset.check_dataset`); `image_shape` (height, width, channels) is what
    the images become: (28, 28, 1) for digit sets, the crop-and-resize target for folders.
    """

    SPEC_CLASS = ImageExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, dataset: str, image_shape: Shape, max_images: int = 0):
        if len(image_shape) != 3 or image_shape[2] not in (1, 3):
            raise ValueError(f"image_shape {image_shape}: expected (height, width, channels) "
                             "with 1 or 3 channels")
        if isinstance(dataset, str):  # not a compiled spec's runtime parameter
            check_dataset_files(dataset)
        input_config = example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=name, pattern=source) for name, source in SPLITS
        ])
        height, width, channels = (int(size) for size in image_shape)
        super().__init__(
            ImageExampleGenSpec(
                dataset=dataset,
                max_images=max_images,
                image_height=height,
                image_width=width,
                image_channels=channels,
                input_config=input_config,
                output_config=example_gen_pb2.Output(),  # the input splits are the output splits
                output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
                output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
                examples=types.Channel(type=standard_artifacts.Examples),
            )
        )
