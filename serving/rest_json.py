"""TF Serving's REST JSON for Predict: request bodies to numpy inputs, outputs to JSON.

Requests come in the row format (``{"instances": [...]}``, one entry per example, the batch
dimension implied) or the columnar format (``{"inputs": ...}``, whole tensors); strings may be
sent as ``{"b64": "..."}``. Responses mirror the request: ``predictions`` for rows, ``outputs``
for columns. As TF Serving does, a DT_STRING output whose alias ends in ``_bytes`` is returned
as ``{"b64": "..."}``. Where TF Serving would write raw non-UTF-8 bytes into the JSON (an
invalid document), this server sends ``{"b64": ...}`` too.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving import request_limits
from serving.errors import invalid_argument
from serving.request_limits import RequestLimits
from serving.tensors import dtype_name

ROW, COLUMNAR = "row", "columnar"
BYTES_SUFFIX = "_bytes"
_FLOATS = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16)
_INTS = (
    types_pb2.DT_INT8,
    types_pb2.DT_INT16,
    types_pb2.DT_INT32,
    types_pb2.DT_INT64,
    types_pb2.DT_UINT8,
    types_pb2.DT_UINT16,
    types_pb2.DT_UINT32,
    types_pb2.DT_UINT64,
)

TensorInfos = Mapping[str, meta_graph_pb2.TensorInfo]


def parse_body(body: bytes) -> dict[str, Any]:
    """The request document; it must be a JSON object."""
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise invalid_argument(f"JSON Parse error: {error}") from error
    except ValueError as error:  # an integer literal of more digits than Python converts
        raise invalid_argument(
            f"JSON Parse error: a number is too long ({error}); numbers must fit the input's "
            "dtype"
        ) from error
    except RecursionError as error:
        raise invalid_argument(
            "JSON Parse error: lists or objects nested too deeply (tensors have at most "
            f"{request_limits.current().max_tensor_rank} dimensions: genpipe serve "
            "--max_tensor_rank)"
        ) from error
    if not isinstance(document, dict):
        raise invalid_argument(
            f"JSON Value: {_short(document)} Is not object: the body must be a JSON object with "
            "'instances' or 'inputs'"
        )
    return document


def signature_name(document: Mapping[str, Any]) -> str:
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"'signature_name' key must be a string value, got {_short(name)}")
    return name


def _short(value: Any, limit: int = 120) -> str:
    try:
        text = json.dumps(value)
    except (RecursionError, ValueError):
        text = f"<a JSON {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


# -- JSON -> numpy -----------------------------------------------------------------------------


def _probe_shape(value: Any) -> list[int]:
    """The shape a nested list declares: the lengths along its first elements."""
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    return shape


def _dense_leaves(value: Any, name: str) -> tuple[tuple[int, ...], list[Any]]:
    """Shape and leaves of a nested list that must be rectangular."""
    shape = _probe_shape(value)
    leaves: list[Any] = []

    def walk(item: Any, depth: int) -> None:
        if isinstance(item, list):
            if depth >= len(shape) or len(item) != shape[depth]:
                expected = shape[depth] if depth < len(shape) else "a value"
                raise invalid_argument(
                    f"input '{name}': lists must be rectangular; found a list of {len(item)} at "
                    f"depth {depth} where {expected} was expected (shape so far {list(shape)})"
                )
            for element in item:
                walk(element, depth + 1)
        elif depth != len(shape):
            raise invalid_argument(
                f"input '{name}': value {_short(item)} found at depth {depth}, expected all "
                f"values at depth {len(shape)} (lists must be rectangular)"
            )
        else:
            leaves.append(item)

    walk(value, 0)
    return tuple(shape), leaves


def _type_error(name: str, leaf: Any, dtype: int) -> Exception:
    return invalid_argument(
        f"input '{name}': JSON value {_short(leaf)} is not of expected type {dtype_name(dtype)}"
    )


def _string_leaf(leaf: Any, name: str, dtype: int) -> bytes:
    if isinstance(leaf, str):
        try:
            return leaf.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone UTF-16 surrogate, "\ud800"
            raise invalid_argument(
                f"input '{name}': string {_short(leaf)} is not valid Unicode (a lone UTF-16 "
                f"surrogate at position {error.start}); send text as UTF-8, bytes as "
                '{"b64": "..."}'
            ) from error
    if _is_b64(leaf):
        try:
            return base64.b64decode(leaf["b64"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise invalid_argument(
                f"input '{name}': {_short(leaf)} is not valid base64 ({error})"
            ) from error
    if isinstance(leaf, dict):
        raise invalid_argument(
            f"input '{name}': JSON object {_short(leaf)} not formatted correctly for base64 data; "
            'send bytes as {"b64": "<base64 text>"}'
        )
    raise _type_error(name, leaf, dtype)


def _check_numeric_leaf(leaf: Any, name: str, dtype: int) -> None:
    if isinstance(leaf, bool):
        if dtype != types_pb2.DT_BOOL:
            raise _type_error(name, leaf, dtype)
    elif dtype == types_pb2.DT_BOOL:
        raise _type_error(name, leaf, dtype)
    elif isinstance(leaf, int):
        return
    elif isinstance(leaf, float):
        if dtype in _INTS:
            raise _type_error(name, leaf, dtype)
    else:
        raise _type_error(name, leaf, dtype)


def _check_range(array: np.ndarray, name: str, dtype: int) -> None:
    """Integers must fit the dtype; finite floats must not overflow it."""
    target = tf.as_dtype(dtype).as_numpy_dtype
    if dtype in _INTS:
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise invalid_argument(
                f"input '{name}': values must be in [{info.min}, {info.max}] for "
                f"{dtype_name(dtype)}, got {array.min()}..{array.max()}"
            )
    elif dtype in _FLOATS and array.size:
        finite = array[np.isfinite(array)]
        limit = float(np.finfo(target).max) if dtype != types_pb2.DT_BFLOAT16 else 3.38e38
        if finite.size and np.abs(finite).max() > limit:
            raise invalid_argument(
                f"input '{name}': cannot convert {np.abs(finite).max()} to {dtype_name(dtype)} "
                "without loss of precision"
            )


def to_array(
    value: Any, dtype: int, name: str, limits: RequestLimits | None = None
) -> np.ndarray:
    """One JSON value (scalar or nested lists) as an array of the signature's dtype; its shape
    and strings are checked against ``limits`` (default: the server's) before it is built."""
    limits = limits or request_limits.current()
    request_limits.check_shape(name, _probe_shape(value), limits)
    if dtype == types_pb2.DT_STRING:
        shape, leaves = _dense_leaves(value, name)
        strings = np.empty(len(leaves), dtype=object)
        strings[:] = [_string_leaf(leaf, name, dtype) for leaf in leaves]
        for string in strings:
            request_limits.check_string(name, len(string), limits)
        return strings.reshape(shape)
    if dtype not in _FLOATS + _INTS + (types_pb2.DT_BOOL,):
        raise invalid_argument(
            f"input '{name}': dtype {dtype_name(dtype)} is not supported in JSON"
        )
    if dtype == types_pb2.DT_BOOL:
        allowed = "b"
    else:
        allowed = "iu" if dtype in _INTS else "iuf"
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError):
        array = None  # ragged: the walk below names the problem
    if array is None or array.dtype.kind not in allowed:
        shape, leaves = _dense_leaves(value, name)
        for leaf in leaves:
            _check_numeric_leaf(leaf, name, dtype)
        try:
            array = np.array(leaves).reshape(shape)
        except (ValueError, OverflowError) as error:
            raise invalid_argument(f"input '{name}': {error}") from error
        if array.dtype.kind not in allowed:  # e.g. integers too large for int64
            raise invalid_argument(f"input '{name}': values do not fit {dtype_name(dtype)}")
    _check_range(array, name, dtype)
    return array.astype(tf.as_dtype(dtype).as_numpy_dtype)


def inputs_from_document(
    document: Mapping[str, Any], infos: TensorInfos, limits: RequestLimits | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """Numpy inputs from a row or columnar request, and which format it used; every input and
    their total size are held to ``limits`` (default: the server's)."""
    if not infos:
        raise invalid_argument("Failed to get input map for signature: it takes no inputs")
    has_rows, has_columns = "instances" in document, "inputs" in document
    if has_rows and has_columns:
        raise invalid_argument("send only one of 'instances' (row format) or 'inputs' (columnar)")
    if has_rows:
        values, fmt = _from_instances(document["instances"], infos), ROW
    elif has_columns:
        values, fmt = _from_inputs(document["inputs"], infos), COLUMNAR
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    limits = limits or request_limits.current()
    arrays: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    for name, value in values.items():
        arrays[name] = to_array(value, infos[name].dtype, name, limits)
        sizes[name] = _decoded_bytes(arrays[name])
        request_limits.check_request_bytes(sizes, limits)
    return arrays, fmt


def _decoded_bytes(array: np.ndarray) -> int:
    if array.dtype == object:
        return sum(len(value) for value in array.ravel())
    return array.nbytes


def _check_keys(keys: list[str], infos: TensorInfos, where: str) -> None:
    missing, extra = sorted(set(infos) - set(keys)), sorted(set(keys) - set(infos))
    if missing or extra:
        parts = [f"missing input(s) {missing}"] if missing else []
        parts += [f"unexpected input(s) {extra}"] if extra else []
        raise invalid_argument(f"{where}: {'; '.join(parts)}; the signature takes {sorted(infos)}")


def _from_instances(instances: Any, infos: TensorInfos) -> dict[str, Any]:
    """Each input's JSON value (the examples' values, stacked as a list) from ``instances``."""
    if not isinstance(instances, list):
        raise invalid_argument("'instances' must be a list with one entry per example")
    if not instances:
        raise invalid_argument("No values in 'instances' array")
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named:
        if len(infos) > 1:
            raise invalid_argument(
                f"instances is a plain list, but the signature takes several inputs "
                f"{sorted(infos)}: send a list of objects keyed by input name"
            )
        (name,) = infos
        if any(isinstance(x, dict) and not _is_b64(x) for x in instances):
            raise invalid_argument("instances mixes objects and plain values")
        return {name: instances}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or _is_b64(instance):
            raise invalid_argument(f"instance {index} is not an object like instance 0")
        _check_keys(list(instance), infos, f"instance {index}")
    return {name: [instance[name] for instance in instances] for name in infos}


def _from_inputs(inputs: Any, infos: TensorInfos) -> dict[str, Any]:
    """Each input's JSON value from a columnar ``inputs``."""
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(infos) > 1:
            raise invalid_argument(
                f"inputs is a plain value/list, but the signature takes several inputs "
                f"{sorted(infos)}: send an object keyed by input name"
            )
        (name,) = infos
        return {name: inputs}
    _check_keys(list(inputs), infos, "'inputs' object")
    return {name: inputs[name] for name in infos}


# -- numpy -> JSON -----------------------------------------------------------------------------


def _json_leaves(array: np.ndarray, alias: str) -> list[Any]:
    flat = array.ravel()
    if array.dtype.kind in "OSU":
        as_bytes = alias.endswith(BYTES_SUFFIX)
        return [
            _string_json(v if isinstance(v, bytes) else str(v).encode(), as_bytes) for v in flat
        ]
    if array.dtype in (np.float32, np.float16):
        # The shortest text that reads back as the same float32 (0.2, not 0.20000000298...).
        return [float(str(v)) for v in flat]
    if array.dtype.kind == "f" or array.dtype.kind == "V":
        return [float(v) for v in flat]
    return flat.tolist()


def _string_json(value: bytes, as_bytes: bool) -> Any:
    if not as_bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def _nested(array: np.ndarray, alias: str) -> Any:
    leaves = _json_leaves(array, alias)
    if array.ndim == 0:
        return leaves[0]
    holder = np.empty(len(leaves), dtype=object)
    holder[:] = leaves
    return holder.reshape(array.shape).tolist()


def outputs_to_document(outputs: Mapping[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """The response document: ``predictions`` (row) or ``outputs`` (columnar)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    if fmt == COLUMNAR:
        if len(outputs) == 1:
            ((alias, array),) = outputs.items()
            return {"outputs": _nested(array, alias)}
        return {"outputs": {alias: _nested(array, alias) for alias, array in outputs.items()}}
    batch = None
    for alias, array in outputs.items():
        if array.ndim == 0:
            raise invalid_argument(
                f"output '{alias}' has no batch dimension; use the columnar format ('inputs')"
            )
        if batch is not None and array.shape[0] != batch:
            raise invalid_argument(
                f"output '{alias}' has batch size {array.shape[0]}, expected {batch}; "
                "use the columnar format ('inputs')"
            )
        batch = array.shape[0]
    columns = {alias: _nested(array, alias) for alias, array in outputs.items()}
    if len(columns) == 1:
        (values,) = columns.values()
        return {"predictions": values}
    return {"predictions": [{alias: columns[alias][i] for alias in columns} for i in range(batch)]}


def dumps(document: Mapping[str, Any]) -> bytes:
    """JSON text; non-finite floats are written NaN/Infinity as TF Serving does."""
    return json.dumps(document, allow_nan=True).encode("utf-8")
