"""Call an export's signatures the way TensorFlow Serving runs them, for tests.

`tf.saved_model.load` restores through the Python object graph and can run a model that every
real TF Serving refuses, so tests never use it to call an export. They load it with the model
server's own loader (`serving.servable.load_servable`: the `serve` MetaGraphDef imported into a
Session, variables restored through `saver_def`, the init op run, SignatureDef tensor names fed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from serving.servable import Servable, load_servable

Runner = Callable[..., dict[str, tf.Tensor]]


def _runner(servable: Servable, key: str) -> Runner:
    def run(**inputs: Any) -> dict[str, tf.Tensor]:
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        # Eager tensors out, so tests use `.numpy()` and `tf.io.decode_png` as on any output.
        return {alias: tf.constant(value) for alias, value in servable.run(key, arrays).items()}

    return run


def signatures(export_dir: str | os.PathLike) -> Mapping[str, Runner]:
    """{signature key: runner} of the SavedModel at ``export_dir``; ``runner(**inputs)``."""
    servable = load_servable("export", 1, os.fspath(export_dir))
    return {key: _runner(servable, key) for key in servable.signature_names}


class Loaded:
    """An export loaded for tests: ``.signatures`` like a loaded SavedModel's."""

    def __init__(self, export_dir: str | os.PathLike):
        self.signatures = signatures(export_dir)


def load(export_dir: str | os.PathLike) -> Loaded:
    return Loaded(export_dir)
