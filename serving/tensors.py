"""`TensorProto` <-> numpy conversions and dtype names."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.errors import invalid_argument
from serving.request_limits import RequestLimits, check_shape, check_string

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


# The field `tf.make_ndarray` reads each dtype's values from when there is no tensor_content,
# and how many numbers make one element.
_DECODE_FIELD = {
    **{enum: (field, 1) for enum, field in _VALUE_FIELD.items()},
    types_pb2.DT_HALF: ("half_val", 1),
    types_pb2.DT_BFLOAT16: ("half_val", 1),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
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


def decoded_bytes(proto: TensorProto, name: str, limits: RequestLimits) -> int:
    """The bytes a request tensor decodes to, from its declared shape and the values it
    carries, checked against ``limits`` without decoding it (`to_ndarray` after this allocates
    at most that). `tf.make_ndarray` repeats the last value up to the declared shape, so
    carrying fewer values than elements is allowed; more, or tensor_content that is not
    exactly the declared size, is refused."""
    shape = [d.size for d in proto.tensor_shape.dim]
    elements = check_shape(name, shape, limits)
    declared = f"its declared shape [{','.join(map(str, shape))}]"
    if proto.dtype == types_pb2.DT_STRING:
        if proto.tensor_content:
            raise invalid_argument(
                f"input '{name}': DT_STRING values go in string_val, not tensor_content"
            )
        values = proto.string_val
        if len(values) > elements:
            raise invalid_argument(
                f"input '{name}': {len(values)} values in string_val, more than the {elements} "
                f"elements of {declared}"
            )
        for value in values:
            check_string(name, len(value), limits)
        repeated = len(values[-1]) * (elements - len(values)) if values else 0
        return sum(len(value) for value in values) + repeated
    try:
        itemsize = tf.as_dtype(proto.dtype).size
    except TypeError as error:
        raise invalid_argument(f"tensor parsing error: {name}: {error}") from error
    if proto.tensor_content:
        needed = elements * itemsize
        if len(proto.tensor_content) != needed:
            raise invalid_argument(
                f"input '{name}': tensor_content has {len(proto.tensor_content)} bytes; "
                f"{declared} of {dtype_name(proto.dtype)} needs {elements} x {itemsize} = "
                f"{needed}"
            )
    elif proto.dtype in _DECODE_FIELD:
        field, per_element = _DECODE_FIELD[proto.dtype]
        carried = len(getattr(proto, field)) // per_element
        if carried > elements:
            raise invalid_argument(
                f"input '{name}': {carried} values in {field}, more than the {elements} "
                f"elements of {declared}"
            )
    return elements * itemsize


def to_ndarray(proto: TensorProto, name: str) -> np.ndarray:
    """Decode a request tensor; a malformed one is INVALID_ARGUMENT naming the input. Check its
    size with `decoded_bytes` first: the declared shape is filled whatever the values."""
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
