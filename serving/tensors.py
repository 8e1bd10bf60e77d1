"""`TensorProto` <-> numpy conversions and dtype names."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.errors import invalid_argument

TensorProto = tensor_pb2.TensorProto

# The typed value field of each dtype, as TF Serving fills responses (Tensor::AsProtoField):
# clients that read e.g. `outputs["y"].float_val` directly keep working.
_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


def dtype_name(dtype_enum: int) -> str:
    """``DT_FLOAT`` style name of a `DataType` enum value."""
    try:
        return types_pb2.DataType.Name(dtype_enum)
    except ValueError:
        return f"DataType({dtype_enum})"


def dtype_enum(array: np.ndarray) -> int:
    """The `DataType` of a numpy array (object and bytes arrays are DT_STRING)."""
    if array.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    return tf.as_dtype(array.dtype).as_datatype_enum


def to_ndarray(proto: TensorProto, name: str) -> np.ndarray:
    """Decode a request tensor; a malformed one is INVALID_ARGUMENT naming the input."""
    try:
        return tf.make_ndarray(proto)
    except Exception as error:  # noqa: BLE001 - any decoding failure is the client's input
        raise invalid_argument(f"tensor parsing error: {name}: {error}") from error


def to_tensor_proto(array: np.ndarray) -> TensorProto:
    """Encode an output the way TF Serving does: shape plus the dtype's typed value field."""
    array = np.asarray(array)
    enum = dtype_enum(array)
    field = _VALUE_FIELD.get(enum)
    if field is None:  # half, bfloat16, complex...: TensorFlow's own encoding
        return tf.make_tensor_proto(array)
    proto = TensorProto(dtype=enum)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = array.ravel()
    if enum == types_pb2.DT_STRING:
        values = [v if isinstance(v, bytes) else str(v).encode() for v in flat]
    else:
        values = flat.tolist()
    getattr(proto, field).extend(values)
    return proto
