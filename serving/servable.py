"""One loaded version of a model, run the way tensorflow_model_server runs it.

The MetaGraphDef tagged ``serve`` is imported into a graph and session of its own; variables are
restored through the graph's ``saver_def`` and the init op runs (tables, assets; TF2 keeps it as
the ``__saved_model_init_op`` signature), all by `tf.compat.v1.saved_model.loader.load`. Each
signature then runs by its tensor names through a session callable made once at load time.
The Python object graph (`tf.saved_model.load`) is never used: a model that only works through
it fails in TF Serving too, so it must fail here.
"""

from __future__ import annotations

import posixpath
import threading
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.errors import ServingError, failed_precondition, invalid_argument, not_found

SignatureDef = meta_graph_pb2.SignatureDef
DEFAULT_SIGNATURE = "serving_default"
INIT_OP_SIGNATURE = "__saved_model_init_op"  # run once by the loader, never by a request
SERVE_TAG = "serve"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
# Distinct output filters per servable that get their own callable (fetching only those
# outputs, as TF Serving does); further ones run the full callable and pick.
MAX_FILTER_CALLABLES = 16

SessionCallable = Any  # what `tf.compat.v1.Session.make_callable` returns
# Called after each session run: (servable, signature, seconds, outputs fetched).
RunObserver = Callable[["Servable", str, float, Mapping[str, np.ndarray]], None]


def _is_dense(signature: SignatureDef) -> bool:
    """Predict feeds and fetches tensors by name; sparse/composite encodings have none."""
    infos = [*signature.inputs.values(), *signature.outputs.values()]
    return all(info.WhichOneof("encoding") == "name" for info in infos)


class Servable:
    """A SavedModel version in its own session, ready to answer requests (thread-safe)."""

    def __init__(
        self,
        name: str,
        version: int,
        path: str,
        signature_defs: Mapping[str, SignatureDef],
        session: tf.compat.v1.Session,
    ):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs
        # The signatures requests may run: the init op is the loader's, not theirs.
        self.signature_names = sorted(k for k in signature_defs if k != INIT_OP_SIGNATURE)
        self._session = session
        self._lock = threading.Lock()
        self._closed = False
        self._inputs = {k: tuple(sorted(signature_defs[k].inputs)) for k in self.signature_names}
        self._outputs = {k: tuple(sorted(signature_defs[k].outputs)) for k in self.signature_names}
        self._full = {
            key: self._make_callable(key, self._outputs[key])
            for key in self.signature_names
            if _is_dense(signature_defs[key])
        }
        self._filtered: dict[tuple[str, tuple[str, ...]], SessionCallable] = {}
        self.observer: RunObserver | None = None  # set by the manager once the version serves

    def __repr__(self) -> str:
        return f"Servable({self.name!r}, version={self.version}, path={self.path!r})"

    @property
    def closed(self) -> bool:
        return self._closed

    def signature(self, signature_name: str) -> SignatureDef:
        """The def of a signature; an unknown name is FAILED_PRECONDITION."""
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self._inputs:
            raise failed_precondition(
                f'Serving signature key "{name}" not found. '
                f"Signatures of {self.name} version {self.version}: {self.signature_names}"
            )
        return self.signature_defs[name]

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, Any],
        output_filter: Sequence[str] = (),
        timeout_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a signature on numpy ``inputs`` (all of its inputs, by alias).

        Returns the outputs in ``output_filter`` (default: all) as numpy arrays; strings are
        object arrays of bytes. ``timeout_ms`` bounds the run (None: unbounded); the run stops
        with `tf.errors.DeadlineExceededError` when it is over, and one of 0 or less does not
        start. TensorFlow's runtime errors propagate as they are.
        """
        name = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(name)
        if timeout_ms is not None and timeout_ms <= 0:
            # RunOptions reads 0 as "no timeout": an expired deadline must not run at all.
            raise tf.errors.DeadlineExceededError(None, None, "deadline expired before running")
        call, fetched = self._callable(name, tuple(output_filter))
        feeds = [
            np.asarray(inputs[alias], tf.as_dtype(signature.inputs[alias].dtype).as_numpy_dtype)
            for alias in self._inputs[name]
        ]
        options = None if timeout_ms is None else tf.compat.v1.RunOptions(timeout_in_ms=timeout_ms)
        start = time.perf_counter()
        values = dict(zip(fetched, call(*feeds, options=options), strict=True))
        seconds = time.perf_counter() - start
        outputs = {
            alias: _as_array(values[alias], signature.outputs[alias].dtype)
            for alias in (output_filter or fetched)
        }
        if self.observer is not None:
            self.observer(self, name, seconds, outputs)
        return outputs

    def close(self) -> None:
        """Free the session (graph, variables, callables); the servable cannot run after this."""
        with self._lock:
            self._closed = True
            self._full.clear()
            self._filtered.clear()
        self._session.close()

    # -- callables -------------------------------------------------------------------------

    def _make_callable(self, signature_name: str, aliases: tuple[str, ...]) -> SessionCallable:
        """A callable feeding the inputs in alias order and fetching the outputs ``aliases``."""
        signature = self.signature_defs[signature_name]
        return self._session.make_callable(
            fetches=[signature.outputs[alias].name for alias in aliases],
            feed_list=[signature.inputs[alias].name for alias in self._inputs[signature_name]],
            accept_options=True,
        )

    def _callable(
        self, signature_name: str, output_filter: tuple[str, ...]
    ) -> tuple[SessionCallable, tuple[str, ...]]:
        """The callable for a signature and output filter, and the aliases it fetches."""
        everything = self._outputs[signature_name]
        with self._lock:
            if self._closed:
                raise failed_precondition(f"{self!r} is unloaded")
            if signature_name not in self._full:
                raise invalid_argument(
                    f"signature '{signature_name}' of {self.name} version {self.version} has "
                    "sparse or composite tensors; Predict feeds and fetches dense tensors only"
                )
            if not output_filter or output_filter == everything:
                return self._full[signature_name], everything
            key = (signature_name, output_filter)
            if key not in self._filtered:
                if len(self._filtered) >= MAX_FILTER_CALLABLES:
                    return self._full[signature_name], everything
                # Fetch only the filtered outputs, as TF Serving does. No ops are added (the
                # graph is finalized), so making one is cheap.
                self._filtered[key] = self._make_callable(signature_name, output_filter)
            return self._filtered[key], output_filter


def _as_array(value: Any, dtype: int) -> np.ndarray:
    """Session results as arrays: 0-d results come back as numpy scalars or bytes."""
    if dtype == types_pb2.DT_STRING:
        return np.asarray(value, dtype=object)
    return np.asarray(value)


def saved_model_file(version_dir: str) -> str | None:
    """The SavedModel graph file of a version folder, or None while it is not written yet."""
    for name in SAVED_MODEL_FILES:
        candidate = posixpath.join(version_dir, name)
        if tf.io.gfile.exists(candidate):
            return candidate
    return None


def read_meta_graph(
    version_dir: str, tags: Collection[str] = (SERVE_TAG,)
) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef whose tag set is exactly ``tags``, as TensorFlow's loader matches it
    (signature defs exactly as TF Serving reports them)."""
    path = saved_model_file(version_dir)
    if path is None:
        raise not_found(f"no saved_model.pb or saved_model.pbtxt in {version_dir}")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as handle:
        data = handle.read()
    try:
        with warnings.catch_warnings(record=True) as warned:
            # protobuf warns, not raises, when bytes stop parsing midway ("Not all data ...").
            warnings.simplefilter("always", RuntimeWarning)
            if path.endswith(".pbtxt"):
                text_format.Parse(data.decode(), saved_model)
            else:
                saved_model.ParseFromString(data)
    except (DecodeError, text_format.ParseError, UnicodeDecodeError) as error:
        raise ServingError(
            grpc.StatusCode.DATA_LOSS, f"{path} is not a SavedModel protobuf: {error}"
        ) from error
    partial = [w.message for w in warned if issubclass(w.category, RuntimeWarning)]
    if partial:
        raise ServingError(
            grpc.StatusCode.DATA_LOSS, f"{path} is not a SavedModel protobuf: {partial[0]}"
        )
    if not saved_model.meta_graphs:
        raise ServingError(
            grpc.StatusCode.DATA_LOSS,
            f"{path} is not a SavedModel protobuf: it holds no MetaGraphDef ({len(data)} bytes)",
        )
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    present = [",".join(sorted(m.meta_info_def.tags)) for m in saved_model.meta_graphs]
    raise not_found(
        f"no MetaGraphDef with tags '{','.join(sorted(wanted))}' in {path} "
        f"(--saved_model_tags); its tag sets: {present or 'none'}"
    )


def session_config(
    intra_op_threads: int = 0, inter_op_threads: int = 0
) -> tf.compat.v1.ConfigProto:
    """TensorFlow's default session config; 0 threads lets TensorFlow choose (its default)."""
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=intra_op_threads,
        inter_op_parallelism_threads=inter_op_threads,
    )


def load_servable(
    name: str,
    version: int,
    version_dir: str,
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    tags: Collection[str] = (SERVE_TAG,),
) -> Servable:
    """Load the MetaGraphDef tagged ``tags`` of one version folder into a new graph and session;
    failures propagate to the caller (the manager reports them)."""
    meta_graph = read_meta_graph(version_dir, tags)  # clear errors for missing or corrupt files
    graph = tf.Graph()
    session = tf.compat.v1.Session(
        graph=graph, config=session_config(intra_op_threads, inter_op_threads)
    )
    try:
        with graph.as_default():
            tf.compat.v1.saved_model.loader.load(session, list(tags), version_dir)
        servable = Servable(
            name=name,
            version=version,
            path=version_dir,
            signature_defs=dict(meta_graph.signature_def),
            session=session,
        )
        graph.finalize()  # requests only run the graph; nothing may grow it from now on
    except BaseException:
        session.close()
        raise
    return servable
