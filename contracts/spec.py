"""The shape of a serving contract: tensors, signatures, limits, and the sidecar file an export
writes. Plain Python (no TensorFlow), so clients, validators and tests can read it cheaply."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# TF dtype names (`tf.DType.name`) that the contracts use.
DTYPES = ("string", "int32", "int64", "float32", "uint8", "bool")
# A bound is a number, or the name of a limit fixed at export (looked up in the sidecar).
Bound = int | float | str | None
ANY = -1  # a dimension of any size (the batch dimension is always ANY)
SIDECAR = os.path.join("assets.extra", "genpipe_contract.json")
SIDECAR_VERSION = 1
# TF Serving's REST API base64-encodes a string output only when its alias ends in this.
BYTES_SUFFIX = "_bytes"
SEED_MAX = 2**63 - 1
# Limits that bound a request's batch dimension B (vae and gan name theirs `max_batch`).
BATCH_LIMITS = ("max_batch_size", "max_batch")
# The limit on the pixels of an image a signature decodes or computes.
PIXEL_LIMIT = "max_pixels"
# (height, width) of an encoded image -> (height, width) of the largest image computed from it.
SizeRule = Callable[[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Tensor:
    """One input or output of a signature.

    ``low``/``high`` bound the allowed values (inclusive unless ``low_open``); a string bound
    names a limit fixed at export. ``default`` is what clients and the CLI send when the caller
    gives nothing (None: the caller must give it).
    """

    name: str
    dtype: str
    shape: tuple[int, ...] = (ANY,)
    doc: str = ""
    default: Any = None
    low: Bound = None
    high: Bound = None
    low_open: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"{self.name}: dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not self.shape or self.shape[0] != ANY:
            raise ValueError(f"{self.name}: the first dimension must be the batch (ANY)")

    @property
    def is_bytes(self) -> bool:
        """Binary data (PNG, JPEG): the alias ends in `_bytes` so REST base64-encodes it."""
        return self.name.endswith(BYTES_SUFFIX)

    def bounds(self, limits: Mapping[str, Any]) -> tuple[Any, Any]:
        """(low, high) with limit names resolved from ``limits``."""
        return _resolve(self.low, limits), _resolve(self.high, limits)

    def range_text(self, limits: Mapping[str, Any] | None = None) -> str:
        """The allowed range as the in-graph checks and errors write it: "[0, 10]", "(0, 1]".

        Without ``limits`` a limit fixed at export keeps its name: "[0, max_temperature]".
        """
        low, high = (self.low, self.high) if limits is None else self.bounds(limits)
        if low is None and high is None:
            return "any value"
        left = "(-inf" if low is None else ("(" if self.low_open else "[") + _number(low)
        right = "inf)" if high is None else _number(high) + "]"
        return f"{left}, {right}"

    def check_value(self, value: Any, limits: Mapping[str, Any]) -> None:
        """Raise ValueError naming the input when ``value`` is outside its range."""
        low, high = self.bounds(limits)
        too_low = low is not None and (value <= low if self.low_open else value < low)
        too_high = high is not None and value > high
        if too_low or too_high:
            raise ValueError(f"{self.name} must be in {self.range_text(limits)}; got {value}")


@dataclass(frozen=True)
class Signature:
    """A serving signature: its key(s), inputs and outputs."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    doc: str = ""
    also_as: tuple[str, ...] = ()  # other keys exporting the same function (serving_default)
    optional: bool = False  # exported only when the model has what it needs (VAE `edit`)
    # Encoded image inputs the signature enlarges, with the size of the largest image it
    # computes from each; a server may refuse one over PIXEL_LIMIT before decoding it.
    computed_size: Mapping[str, SizeRule] = field(default_factory=dict, compare=False)

    def input(self, name: str) -> Tensor:
        return _by_name(self.inputs, name, f"signature {self.name!r} input")

    def output(self, name: str) -> Tensor:
        return _by_name(self.outputs, name, f"signature {self.name!r} output")

    def defaults(self) -> dict[str, Any]:
        """The default of every input that has one."""
        return {t.name: t.default for t in self.inputs if t.default is not None}


def batch_limit(limits: Mapping[str, Any]) -> tuple[str, int] | None:
    """(name, value) of the limit on the batch among an export's ``limits``; None: it has none."""
    for name in BATCH_LIMITS:
        if limits.get(name) is not None:
            return name, int(limits[name])
    return None


@dataclass(frozen=True)
class Contract:
    """What a served model answers: its name, signatures and the limits fixed at export."""

    model: str
    signatures: tuple[Signature, ...]
    limits: Mapping[str, Any] = field(default_factory=dict)  # defaults; an export may override
    doc: str = ""

    def signature(self, key: str) -> Signature:
        for signature in self.signatures:
            if key == signature.name or key in signature.also_as:
                return signature
        raise KeyError(
            f"{self.model} has no signature {key!r}; signatures: {sorted(self.signature_keys())}"
        )

    def signature_keys(self, *, with_optional: bool = True) -> list[str]:
        keys = []
        for signature in self.signatures:
            if with_optional or not signature.optional:
                keys += [signature.name, *signature.also_as]
        return keys

    def check_export(self, exported: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """Raise ValueError unless ``exported`` matches the contract.

        ``exported`` maps each signature key to {"inputs": {name: (dtype, shape)}, "outputs":
        {...}} with dtype a TF dtype name and shape a list (-1 or None for unknown sizes).
        """
        problems = []
        required = set(self.signature_keys(with_optional=False))
        allowed = set(self.signature_keys())
        for key in sorted(required - set(exported)):
            problems.append(f"signature {key!r} is missing")
        for key in sorted(set(exported) - allowed):
            problems.append(f"signature {key!r} is not in the contract")
        for key in sorted(set(exported) & allowed):
            signature = self.signature(key)
            for side in ("inputs", "outputs"):
                problems += _compare(key, side, getattr(signature, side), exported[key][side])
        if problems:
            raise ValueError(
                f"the export of {self.model} does not match its serving contract: "
                + "; ".join(problems)
            )


def _compare(key: str, side: str, expected: tuple[Tensor, ...], found: Mapping) -> list[str]:
    where = f"{key} {side}"
    names = {t.name for t in expected}
    problems = [f"{where}: missing {sorted(names - set(found))}"] if names - set(found) else []
    if set(found) - names:
        problems.append(f"{where}: unexpected {sorted(set(found) - names)}")
    for tensor in expected:
        if tensor.name not in found:
            continue
        dtype, shape = found[tensor.name]
        shape = tuple(ANY if d is None else int(d) for d in shape)
        if dtype != tensor.dtype:
            problems.append(f"{where} {tensor.name}: dtype {dtype}, contract {tensor.dtype}")
        if len(shape) != len(tensor.shape) or any(
            want not in (ANY, got) for want, got in zip(tensor.shape, shape, strict=False)
        ):
            problems.append(
                f"{where} {tensor.name}: shape {list(shape)}, contract "
                f"{list(tensor.shape)} (-1 = any)"
            )
    return problems


def _by_name(tensors: tuple[Tensor, ...], name: str, what: str) -> Tensor:
    for tensor in tensors:
        if tensor.name == name:
            return tensor
    raise KeyError(f"no {what} {name!r}; allowed: {[t.name for t in tensors]}")


def _resolve(bound: Bound, limits: Mapping[str, Any]) -> Any:
    """A number as is; a limit name (with an optional leading "-") from ``limits``."""
    if not isinstance(bound, str):
        return bound
    sign, name = (-1, bound[1:]) if bound.startswith("-") else (1, bound)
    if name not in limits:
        raise KeyError(f"limit {name!r} is not among the export's limits {sorted(limits)}")
    return None if limits[name] is None else sign * limits[name]


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- the sidecar file ---------------------------------------------------------------------------
# Local paths use plain file calls (no TensorFlow import, for clients); a path with a scheme
# (gs://, ram://, s3://) goes through tf.io.gfile, imported only then.


def _is_remote(path: str) -> bool:
    return "://" in path


def _write_text(path: str, text: str) -> None:
    if not _is_remote(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(text)


def _read_text(path: str) -> str:
    if not _is_remote(path):
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "r") as handle:
            return handle.read()
    except tf.errors.NotFoundError as error:
        raise FileNotFoundError(f"no contract sidecar at {path}") from error


def write_sidecar(
    export_dir: str | os.PathLike,
    contract: Contract,
    model: str,
    signatures: list[str],
    limits: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `assets.extra/genpipe_contract.json`: what a client or validator needs to know of
    one export (served model name, signature keys, limits fixed at export, model facts)."""
    unknown = sorted(set(contract.limits) - set(limits))
    if unknown:
        raise ValueError(f"limits {unknown} of the {contract.model} contract are not given")
    data = {
        "sidecar_version": SIDECAR_VERSION,
        "contract": contract.model,
        "model": model,
        "signatures": sorted(signatures),
        "limits": dict(limits),
        "info": dict(info or {}),
    }
    _write_text(os.path.join(os.fspath(export_dir), SIDECAR),
                json.dumps(data, indent=2, sort_keys=True))
    return data


def read_sidecar(export_dir: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of an export (local or remote); FileNotFoundError names the file when there is
    none."""
    path = os.path.join(os.fspath(export_dir), SIDECAR)
    data = json.loads(_read_text(path))
    if data.get("sidecar_version") != SIDECAR_VERSION:
        raise ValueError(
            f"{path}: sidecar_version {data.get('sidecar_version')!r} is not {SIDECAR_VERSION}"
        )
    return data
