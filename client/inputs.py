"""Request columns built from a contract `Signature`: names, dtypes and defaults come from the
contract, so the typed calls and `genpipe generate` restate none of them. No TensorFlow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from contracts import Signature, Tensor


def numpy_dtype(tensor: Tensor) -> np.dtype:
    """The numpy dtype of a contract dtype name (strings travel as bytes objects)."""
    return np.dtype(object) if tensor.dtype == "string" else np.dtype(tensor.dtype)


def out_of_range(tensor: Tensor, value: Any) -> str | None:
    """Why ``value`` breaks a plain-number bound of ``tensor`` ("must be in (0, 1]; got 0"), or
    None. Bounds naming a limit fixed at export are left to the server, which knows the limit."""
    # A limit resolved to None is no bound, so check_value tests the plain numbers only.
    unknown = {b.lstrip("-"): None for b in (tensor.low, tensor.high) if isinstance(b, str)}
    try:
        tensor.check_value(value, unknown)
    except ValueError:
        return f"must be in {tensor.range_text()}; got {value}"
    return None


def _check(tensor: Tensor, column: np.ndarray) -> None:
    if column.dtype == object or column.size == 0:
        return
    for extreme in (column.min(), column.max()):  # an interval holds all values iff both ends
        why = out_of_range(tensor, extreme.item())
        if why:
            raise ValueError(f"{tensor.name} {why}")


def _encoded(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list | tuple):
        return [_encoded(v) for v in value]
    return value


def _batch(signature: Signature, values: Mapping[str, Any]) -> int:
    """The batch size: the length of the first input given per example (1 if all are scalars)."""
    for tensor in signature.inputs:
        value = values.get(tensor.name)
        if value is not None and np.ndim(_encoded(value)) > 0:
            return len(value)
    return 1


def _column(tensor: Tensor, value: Any, batch: int) -> np.ndarray:
    array = np.asarray(_encoded(value), dtype=numpy_dtype(tensor))
    rank = len(tensor.shape)
    if rank == 1 and array.ndim == 0:  # one control for every example
        array = np.full([batch], array, dtype=array.dtype)
    if array.ndim != rank:
        raise ValueError(
            f"{tensor.name} must have {rank} dimension(s) {list(tensor.shape)}, "
            f"got shape {list(array.shape)} (-1 = any size)"
        )
    if array.shape[0] != batch:
        raise ValueError(
            f"{tensor.name}: expected one value or {batch} values (one per example), "
            f"got {array.shape[0]}"
        )
    return array


def signature_inputs(signature: Signature, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The Predict inputs of ``signature`` from the caller's ``values`` (keyed by input name).

    A value left out or None takes the contract's default; one without a default is required.
    A scalar control is repeated for every example. Plain-number bounds are checked here
    (ValueError naming the input and its range); unknown names raise TypeError.
    """
    unknown = sorted(set(values) - {t.name for t in signature.inputs})
    if unknown:
        raise TypeError(
            f"{signature.name} has no inputs {unknown}; inputs: "
            f"{[t.name for t in signature.inputs]}"
        )
    batch = _batch(signature, values)
    columns = {}
    for tensor in signature.inputs:
        value = values.get(tensor.name)
        value = tensor.default if value is None else value
        if value is None:
            raise TypeError(
                f"{signature.name} needs {tensor.name!r} ({tensor.doc or tensor.dtype})"
            )
        columns[tensor.name] = _column(tensor, value, batch)
        _check(tensor, columns[tensor.name])
    return columns


def bytes_output(signature: Signature) -> str:
    """The alias of the signature's encoded-image output (the one ending in `_bytes`)."""
    (alias,) = [t.name for t in signature.outputs if t.is_bytes]
    return alias
