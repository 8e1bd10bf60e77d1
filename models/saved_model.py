"""Write a SavedModel that TensorFlow Serving can run, checked against its serving contract.

TF Serving (and `saved_model_cli run`, KServe, Vertex) never runs the Python object graph: it
imports the `serve` MetaGraphDef into a Session, restores variables through the graph's
`saver_def` and feeds the SignatureDef's tensor names. `tf.saved_model.save` builds that saver
from the `tf.Variable`s it finds by walking trackable attributes. A Keras 3 variable is a
`keras.Variable` whose backing `tf.Variable` is not itself a tracked child, so the saver skips it:
the model loads with `tf.saved_model.load` (which restores through the object graph) and fails in
every real server with "Could not find variable ...".

`save` fixes that as `keras.export.ExportArchive` does: the exported module also tracks every
`tf.Variable` the signatures capture, so each one gets a saver entry. Collecting the captures of
the traced signatures (rather than listing models) covers every variable a signature reads,
whoever created it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from contracts import Contract, write_sidecar

# The attribute that holds the captured variables; one name so a re-save does not duplicate it.
_TRACKED_VARIABLES = "_serving_variables"

ConcreteFunction = tf.types.experimental.ConcreteFunction


def captured_variables(functions: Mapping[str, ConcreteFunction]) -> list[tf.Variable]:
    """Every `tf.Variable` the concrete functions capture, once each, in a stable order."""
    seen: dict[int, tf.Variable] = {}
    for name in sorted(functions):
        for variable in functions[name].variables:
            seen.setdefault(id(variable), variable)
    return list(seen.values())


def _spec(tensor: Any) -> tuple[str, list]:
    return tensor.dtype.name, tensor.shape.as_list()


def signature_specs(functions: Mapping[str, ConcreteFunction]) -> dict[str, dict]:
    """{key: {"inputs": {name: (dtype, shape)}, "outputs": {...}}} of traced signatures."""
    specs = {}
    for key, function in functions.items():
        args, kwargs = function.structured_input_signature
        inputs = {spec.name: spec for spec in args} | dict(kwargs)  # traced args carry names
        specs[key] = {
            "inputs": {name: _spec(spec) for name, spec in inputs.items()},
            "outputs": {name: _spec(t) for name, t in function.structured_outputs.items()},
        }
    return specs


def save(
    module: tf.Module,
    export_dir: str | os.PathLike,
    signatures: Mapping[str, tf.types.experimental.GenericFunction],
    *,
    contract: Contract,
    limits: Mapping[str, Any],
    model_name: str | None = None,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Save ``module`` with ``signatures`` so that TF Serving's loader can run it.

    The traced signatures must match ``contract`` (ValueError otherwise, before anything is
    written). The sidecar `assets.extra/genpipe_contract.json` records the served name, the
    signature keys, the ``limits`` fixed at export and ``info``; it is returned. `saved_model.pb`
    is written last, so a server polling the folder never sees a half-written version.
    """
    concrete = {
        key: function
        if isinstance(function, ConcreteFunction)
        else function.get_concrete_function()
        for key, function in signatures.items()
    }
    contract.check_export(signature_specs(concrete))
    setattr(module, _TRACKED_VARIABLES, captured_variables(concrete))
    sidecar = write_sidecar(
        export_dir, contract, model_name or contract.model, list(concrete), limits, info
    )
    tf.saved_model.save(module, os.fspath(export_dir), signatures=concrete)
    return sidecar
