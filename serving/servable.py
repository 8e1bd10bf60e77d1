"""One loaded version of a model: its SavedModel, signature defs and signature functions."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import tensorflow as tf
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.errors import ServingError, failed_precondition, not_found

SignatureDef = meta_graph_pb2.SignatureDef
DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True)
class Servable:
    """A SavedModel version ready to answer requests."""

    name: str
    version: int
    path: str
    signature_defs: Mapping[str, SignatureDef]
    functions: Mapping[str, Any]
    module: Any = field(repr=False)

    def signature(self, signature_name: str) -> tuple[SignatureDef, Any]:
        """The def and function of a signature; an unknown name is FAILED_PRECONDITION."""
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self.functions:
            raise failed_precondition(
                f'Serving signature key "{name}" not found. '
                f"Signatures of {self.name} version {self.version}: {sorted(self.functions)}"
            )
        return self.signature_defs[name], self.functions[name]


def saved_model_file(version_dir: str) -> str | None:
    """The SavedModel graph file of a version folder, or None while it is not written yet."""
    for name in SAVED_MODEL_FILES:
        candidate = posixpath.join(version_dir, name)
        if tf.io.gfile.exists(candidate):
            return candidate
    return None


def read_meta_graph(version_dir: str) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tagged ``serve`` (signature defs exactly as TF Serving reports them)."""
    path = saved_model_file(version_dir)
    if path is None:
        raise not_found(f"no saved_model.pb or saved_model.pbtxt in {version_dir}")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as handle:
        data = handle.read()
    try:
        if path.endswith(".pbtxt"):
            text_format.Parse(data.decode(), saved_model)
        else:
            saved_model.ParseFromString(data)
    except (DecodeError, text_format.ParseError, UnicodeDecodeError) as error:
        raise ServingError(
            grpc.StatusCode.DATA_LOSS, f"{path} is not a SavedModel protobuf: {error}"
        ) from error
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise not_found(
        f"no MetaGraphDef tagged '{SERVE_TAG}' in {path}: not a complete SavedModel for serving"
    )


def load_servable(name: str, version: int, version_dir: str) -> Servable:
    """Load one version folder; any failure propagates to the caller (the manager reports it)."""
    meta_graph = read_meta_graph(version_dir)
    module = tf.saved_model.load(version_dir, tags=[SERVE_TAG])
    functions = dict(module.signatures)
    signature_defs = {key: meta_graph.signature_def[key] for key in meta_graph.signature_def}
    return Servable(
        name=name,
        version=version,
        path=version_dir,
        signature_defs=signature_defs,
        functions=functions,
        module=module,
    )
