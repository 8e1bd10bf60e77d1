"""Tiny SavedModels that exercise the server: strings and bytes, validated floats, seeds, a model
whose answers name its version, and a loop that runs as long as asked. Used by the tests and
the serving benchmark (which imports this file by path); the server itself ships no models."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf


class StringsModel(tf.Module):
    """Strings in and out, and PNG bytes both ways."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def upper(self, text):
        return {"upper": tf.strings.upper(text), "length": tf.strings.length(text)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="value")])
    def png(self, value):
        """A 2x3 gray PNG per value in [0, 1], as `image_bytes` and as `image`."""
        tf.debugging.assert_less_equal(value, 1.0, message="value: must be in [0, 1]")
        tf.debugging.assert_non_negative(value, message="value: must be in [0, 1]")
        pixels = tf.cast(tf.round(value * 255.0), tf.uint8)
        images = tf.tile(pixels[:, None, None, None], [1, 2, 3, 1])
        encoded = tf.map_fn(tf.io.encode_png, images, fn_output_signature=tf.string)
        return {"image_bytes": encoded, "image": encoded}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image")])
    def decode(self, image):
        """Height, width and mean pixel value of each encoded image."""

        def one(data):
            pixels = tf.io.decode_image(data, channels=1, expand_animations=False)
            shape = tf.shape(pixels)
            return shape[0], shape[1], tf.reduce_mean(tf.cast(pixels, tf.float32))

        height, width, mean = tf.map_fn(
            one, image, fn_output_signature=(tf.int32, tf.int32, tf.float32)
        )
        return {"height": height, "width": width, "mean": mean}

    def signatures(self) -> dict:
        return {"serving_default": self.upper, "png": self.png, "decode": self.decode}


class ScaleModel(tf.Module):
    """Float math with input validation in the graph, and seeded sampling."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="x"),
            tf.TensorSpec([None], tf.float32, name="temperature"),
        ]
    )
    def scale(self, x, temperature):
        checks = [
            tf.debugging.assert_non_negative(temperature, message="temperature: must be in [0, 2]"),
            tf.debugging.assert_less_equal(
                temperature, 2.0, message="temperature: must be in [0, 2]"
            ),
        ]
        with tf.control_dependencies(checks):
            return {"y": x * temperature[:, None]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="seed")])
    def sample(self, seed):
        z = tf.map_fn(
            lambda s: tf.random.stateless_normal([4], tf.stack([s, tf.constant(0, tf.int64)])),
            seed,
            fn_output_signature=tf.float32,
        )
        return {"z": z}

    def signatures(self) -> dict:
        return {"serving_default": self.scale, "sample": self.sample}


class CounterModel(tf.Module):
    """Answers with its own version number: y = x + version."""

    def __init__(self, version: int):
        super().__init__()
        self.version = tf.Variable(version, dtype=tf.int64, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def count(self, x):
        versions = tf.fill(tf.shape(x), self.version)
        return {"version": versions, "y": x + tf.cast(self.version, tf.float32)}

    def signatures(self) -> dict:
        return {"serving_default": self.count}


class SpinModel(tf.Module):
    """A graph loop of ``steps`` iterations (about a microsecond each): a request that computes
    for as long as asked, to check that deadlines stop it."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="steps")])
    def spin(self, steps):
        def step(i, total):
            return i + 1, total + i % 3

        count, total = tf.while_loop(
            lambda i, _: i < steps, step, (tf.constant(0, tf.int64), tf.constant(0, tf.int64))
        )
        return {"count": count, "total": total}

    def signatures(self) -> dict:
        return {"serving_default": self.spin}


class VocabModel(tf.Module):
    """Word ids from a vocabulary file: a table the SavedModel's init op fills from its asset."""

    def __init__(self, vocab_file: str | os.PathLike):
        super().__init__()
        initializer = tf.lookup.TextFileInitializer(
            str(vocab_file),
            tf.string,
            tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="word")])
    def lookup(self, word):
        return {"id": self.table.lookup(word)}

    def signatures(self) -> dict:
        return {"serving_default": self.lookup}


class DenseModel(tf.Module):
    """A small MLP (64 -> 256 -> 10 softmax): the benchmark's model."""

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = tf.random.Generator.from_seed(seed)
        self.w1 = tf.Variable(generator.normal([64, 256]) * 0.1)
        self.w2 = tf.Variable(generator.normal([256, 10]) * 0.1)

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
    def predict(self, x):
        hidden = tf.nn.relu(tf.matmul(x, self.w1))
        return {"probabilities": tf.nn.softmax(tf.matmul(hidden, self.w2))}

    def signatures(self) -> dict:
        return {"serving_default": self.predict}


def save(module: tf.Module, export_dir: str | os.PathLike) -> Path:
    """Save a toy module with its signatures."""
    tf.saved_model.save(module, str(export_dir), signatures=module.signatures())
    return Path(export_dir)


def push(export_dir: str | os.PathLike, base_path: str | os.PathLike, version: int) -> Path:
    """Copy a SavedModel to ``base_path/version`` the way a pusher must: saved_model.pb last."""
    target = Path(base_path) / str(version)
    target.mkdir(parents=True, exist_ok=True)
    source = Path(export_dir)
    for item in source.iterdir():
        if item.name == "saved_model.pb":
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target / item.name)
    partial = target / "saved_model.pb.tmp"
    shutil.copy2(source / "saved_model.pb", partial)
    partial.rename(target / "saved_model.pb")
    return target


def export_and_push(module: tf.Module, base_path: str | os.PathLike, version: int) -> Path:
    """Save ``module`` to a temporary folder, then `push` it as ``version``."""
    with tempfile.TemporaryDirectory() as scratch:
        return push(save(module, Path(scratch) / "export"), base_path, version)
