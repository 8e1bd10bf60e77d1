"""The protocol-neutral core: resolve a model spec, validate inputs against the signature, run
it, and build the response protos both the gRPC and REST front ends return."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from serving import request_limits
from serving.errors import ServingError, from_tf_error, invalid_argument
from serving.manager import ModelManager
from serving.servable import DEFAULT_SIGNATURE, Servable, SignatureDef
from serving.tensors import (
    TensorProto,
    decoded_bytes,
    dtype_enum,
    dtype_name,
    to_ndarray,
    to_tensor_proto,
)

if TYPE_CHECKING:  # serving.batching imports this module
    from serving.batching import BatchScheduler

SIGNATURE_DEF_FIELD = "signature_def"


@dataclass
class RequestRecord:
    """What a request resolved to, for metrics and logs (filled in as the request proceeds)."""

    model: str = ""
    version: str = ""
    signature: str = ""


@dataclass(frozen=True)
class Spec:
    """A model spec: name plus at most one of version and label."""

    name: str
    version: int | None = None
    label: str | None = None

    @classmethod
    def from_proto(cls, spec: model_pb2.ModelSpec) -> Spec:
        choice = spec.WhichOneof("version_choice")
        return cls(
            name=spec.name,
            version=spec.version.value if choice == "version" else None,
            label=spec.version_label if choice == "version_label" else None,
        )


# -- validation --------------------------------------------------------------------------------


def _describe(signature_name: str, servable: Servable) -> str:
    return f"signature '{signature_name}' of model {servable.name} version {servable.version}"


def _shape_text(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def check_input_names(signature: SignatureDef, names: Sequence[str], where: str) -> None:
    """The request must send exactly the signature's inputs."""
    expected = set(signature.inputs)
    missing, extra = sorted(expected - set(names)), sorted(set(names) - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unexpected input(s) {extra}")
        raise invalid_argument(
            f"input size does not match signature: {'; '.join(parts)}. "
            f"{where} takes inputs {sorted(expected)}"
        )


def check_input_dtype(signature: SignatureDef, name: str, dtype: int, where: str) -> None:
    expected = signature.inputs[name].dtype
    if dtype != expected:
        raise invalid_argument(
            f"input '{name}' must have dtype {dtype_name(expected)}, got {dtype_name(dtype)} "
            f"({where})"
        )


def check_input_shape(signature: SignatureDef, name: str, shape: Sequence[int], where: str) -> None:
    """Rank and fixed dimensions must match the signature (-1 dimensions take any size)."""
    spec = signature.inputs[name].tensor_shape
    if spec.unknown_rank:
        return
    dims = [d.size for d in spec.dim]
    if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape, strict=True)):
        raise invalid_argument(
            f"input '{name}' must have shape {_shape_text(dims)} (-1 = any size), got "
            f"{_shape_text(shape)} ({where})"
        )


def validate_arrays(
    servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray]
) -> None:
    """Names, dtypes and shapes of numpy inputs against the signature."""
    signature = servable.signature(signature_name)
    where = _describe(signature_name, servable)
    check_input_names(signature, list(inputs), where)
    for name, array in inputs.items():
        check_input_dtype(signature, name, dtype_enum(array), where)
        check_input_shape(signature, name, array.shape, where)


def check_output_filter(signature: SignatureDef, output_filter: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias}. {where} has outputs "
                f"{sorted(signature.outputs)}"
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)


# -- running -----------------------------------------------------------------------------------


def timeout_ms(deadline: float | None) -> int | None:
    """Whole milliseconds left until ``deadline`` (a `time.monotonic` time); None: no deadline."""
    if deadline is None:
        return None
    return math.floor((deadline - time.monotonic()) * 1000)


def run_signature(
    servable: Servable,
    signature_name: str,
    inputs: Mapping[str, np.ndarray],
    output_filter: Sequence[str] = (),
    deadline: float | None = None,
    batching: BatchScheduler | None = None,
) -> dict[str, np.ndarray]:
    """Validate ``inputs`` and run the signature in the servable's session; returns the
    (filtered) outputs as numpy. The run stops at ``deadline`` (`time.monotonic`) with
    DEADLINE_EXCEEDED; a deadline already past answers that without running. With
    ``batching`` the run is merged with concurrent requests to the same signature."""
    signature_name = signature_name or DEFAULT_SIGNATURE
    signature = servable.signature(signature_name)
    where = _describe(signature_name, servable)
    validate_arrays(servable, signature_name, inputs)
    check_output_filter(signature, output_filter, where)
    budget = timeout_ms(deadline)
    try:
        if batching is not None:
            return batching.run(servable, signature_name, inputs, output_filter, deadline)
        return servable.run(signature_name, inputs, output_filter, budget)
    except ServingError:
        raise
    except tf.errors.DeadlineExceededError as error:
        if budget is None:  # raised by the model itself, not by our timeout
            raise from_tf_error(error) from error
        raise ServingError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"Deadline exceeded: {where} did not finish in the {max(budget, 0)} ms left of the "
            "request's deadline",
        ) from error
    except Exception as error:  # noqa: BLE001 - mapped to the canonical code TF Serving uses
        raise from_tf_error(error) from error


def request_arrays(
    servable: Servable, signature_name: str, tensors: Mapping[str, TensorProto]
) -> dict[str, np.ndarray]:
    """A request's input tensors as numpy, once their names, dtypes and shapes match the
    signature (checked before decoding, as TF Serving does) and their declared sizes are
    within the server's `request_limits` and the export's batch limit."""
    signature = servable.signature(signature_name)
    where = _describe(signature_name, servable)
    check_input_names(signature, list(tensors), where)
    limits = request_limits.current()
    shapes, sizes = {}, {}
    for name, proto in tensors.items():
        check_input_dtype(signature, name, proto.dtype, where)
        shapes[name] = [d.size for d in proto.tensor_shape.dim]
        check_input_shape(signature, name, shapes[name], where)
        sizes[name] = decoded_bytes(proto, name, limits)
    request_limits.check_request_bytes(sizes, limits)
    request_limits.check_batch(servable, shapes, limits)
    inputs = {name: to_ndarray(proto, name) for name, proto in tensors.items()}
    request_limits.check_images(servable, signature_name, inputs)
    return inputs


def predict(
    manager: ModelManager,
    request: predict_pb2.PredictRequest,
    record: RequestRecord | None = None,
    deadline: float | None = None,
    batching: BatchScheduler | None = None,
) -> predict_pb2.PredictResponse:
    """Answer a `PredictRequest` (gRPC Predict); the run stops at ``deadline`` and goes
    through ``batching`` when given (see `run_signature`)."""
    record = record or RequestRecord()
    spec = Spec.from_proto(request.model_spec)
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    record.model, record.signature = spec.name, signature_name
    with manager.servable(spec.name, spec.version, spec.label) as servable:
        record.version = str(servable.version)
        inputs = request_arrays(servable, signature_name, request.inputs)
        outputs = run_signature(
            servable, signature_name, inputs, list(request.output_filter), deadline, batching
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(array))
        return response


def model_metadata(
    manager: ModelManager, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata: the signature_def map of the resolved version, packed in an Any."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument(
            f"GetModelMetadataRequest must specify at least one metadata_field "
            f"(supported: '{SIGNATURE_DEF_FIELD}')"
        )
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(
                f"Metadata field {field} is not supported (supported: '{SIGNATURE_DEF_FIELD}')"
            )
    spec = Spec.from_proto(request.model_spec)
    with manager.servable(spec.name, spec.version, spec.label) as servable:
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


def model_status(
    manager: ModelManager, request: get_model_status_pb2.GetModelStatusRequest
) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus: state and load status of one version or all versions of a model."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    spec = Spec.from_proto(request.model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in manager.model_status(spec.name, spec.version, spec.label):
        entry = response.model_version_status.add(version=status.version, state=status.state)
        entry.status.error_code = status.error_code.value[0]
        entry.status.error_message = status.error_message
    return response
