"""Bounds on the sizes a request declares, checked before anything is allocated for it.

A `TensorProto` declares its shape apart from the values it carries: `tensor_shape
[2147483648, 2]` with no values is 37 bytes on the wire and 16 GiB once `tf.make_ndarray` has
filled it (with zeros, or by repeating a single value). So every declared size is checked here
first: rank, dimensions, elements per tensor, string lengths and the bytes of the whole request
once decoded. Models with a genpipe contract sidecar are also held to their export's batch
limit and, for signatures that enlarge an image (DeepDream's octaves), to its pixel limit, read
from the encoded image's header before it is decoded. A refusal is INVALID_ARGUMENT (HTTP 400)
naming the input, the limit and the flag or export limit that sets it. The graph's own checks
remain the last line.

The limits are genpipe's (`genpipe serve` flags; TF Serving has none of them) and hold for the
whole process: `configure` sets them, `current` reads them. TensorFlow-free, so `--help` stays
fast.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contracts import CONTRACTS, read_sidecar
from contracts.spec import PIXEL_LIMIT, SIDECAR, Signature, batch_limit
from serving import image_headers
from serving.errors import invalid_argument

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("genpipe.serving")
MIN_SIDE_LIMIT = "min_side"  # fast_style's export limit on an image's shorter side


@dataclass(frozen=True)
class RequestLimits:
    """What one request may declare; each field is the `genpipe serve` flag of the same name."""

    # Elements of one input tensor; each dimension is bounded by it too. 2**24 float32 is
    # 64 MiB, what a default --max_message_mb request can carry; the largest input of any
    # contract is text_lm's key/value cache, 64 x 1 x 2 x 100 x 128 = 1.6M floats (book).
    max_tensor_elements: int = 2**24
    # Bytes of all inputs once decoded (numbers times their size; strings by length, a value
    # repeated to fill a shape counted each time). 4x the default message: packed int64
    # varints decode to up to 8 bytes per wire byte, and 16 request threads x 256 MiB still
    # fit a server's memory.
    max_request_bytes: int = 2**28
    # Bytes of one string element: the largest image a contract takes is a style_transfer
    # photo of 2**24 pixels (its max_pixels), 48 MiB as raw RGB; a PNG is barely larger.
    max_string_bytes: int = 2**26
    # Dimensions of one input: the deepest contract input has 5 ([B, layers, heads, position,
    # head_dim]).
    max_tensor_rank: int = 8
    # Rows per request to a genpipe model whose contract sets no batch limit (style_transfer,
    # fast_style, deepdream exported before its max_batch_size): each row is seconds to
    # minutes of CPU, and 16 still cover the validator's and the client's batches.
    default_max_batch_size: int = 16


# Flag help, by field (the defaults come from `RequestLimits`).
HELP = {
    "max_tensor_elements": "largest number of elements (and dimension) of one input tensor",
    "max_request_bytes": "largest size of all inputs of a request once decoded",
    "max_string_bytes": "largest string element (an encoded image, a prompt)",
    "max_tensor_rank": "most dimensions of one input tensor",
    "default_max_batch_size": "largest batch for a genpipe model whose contract sidecar sets "
    "no batch limit",
}
DEFAULTS = RequestLimits()
_current = DEFAULTS


def configure(limits: RequestLimits) -> None:
    """Set the limits every request of this process is held to."""
    global _current
    for name, value in dataclasses.asdict(limits).items():
        if value <= 0:
            raise ValueError(f"--{name} must be positive, got {value}")
    _current = limits


def current() -> RequestLimits:
    return _current


def _over(name: str, what: str, flag: str, limit: str) -> Exception:
    return invalid_argument(
        f"input '{name}': {what}, over the server's limit of {limit} (genpipe serve --{flag})"
    )


# -- declared sizes --------------------------------------------------------------------------


def check_shape(name: str, shape: Sequence[int], limits: RequestLimits) -> int:
    """The number of elements of a declared shape, once rank, dimensions and elements are
    within ``limits``."""
    text = "[" + ",".join(str(size) for size in shape[:16]) + (",...]" if shape[16:] else "]")
    if len(shape) > limits.max_tensor_rank:
        raise _over(
            name, f"shape {text} has {len(shape)} dimensions", "max_tensor_rank",
            f"{limits.max_tensor_rank} dimensions",
        )  # fmt: skip
    if any(size < 0 for size in shape):
        raise invalid_argument(
            f"input '{name}': shape {text} has a negative dimension; dimensions are sizes, "
            "0 or more"
        )
    elements_limit = f"{limits.max_tensor_elements} elements per tensor"
    elements = math.prod(shape)  # Python integers: no overflow
    if elements > limits.max_tensor_elements:
        raise _over(
            name, f"shape {text} declares {elements} elements", "max_tensor_elements",
            elements_limit,
        )  # fmt: skip
    if shape and max(shape) > limits.max_tensor_elements:  # beside a 0: no elements
        raise _over(
            name, f"shape {text} has a dimension of {max(shape)}", "max_tensor_elements",
            elements_limit,
        )  # fmt: skip
    return elements


def check_string(name: str, length: int, limits: RequestLimits) -> None:
    """One string element of ``length`` bytes."""
    if length > limits.max_string_bytes:
        raise _over(
            name, f"a string element of {length} bytes", "max_string_bytes",
            f"{limits.max_string_bytes} bytes per string",
        )  # fmt: skip


def check_request_bytes(sizes: Mapping[str, int], limits: RequestLimits) -> None:
    """The decoded bytes of every input (``sizes``, by input name) together."""
    total = sum(sizes.values())
    if total > limits.max_request_bytes:
        largest = max(sizes, key=sizes.__getitem__)
        raise invalid_argument(
            f"the request's inputs decode to {total} bytes (input '{largest}': "
            f"{sizes[largest]}), over the server's limit of {limits.max_request_bytes} bytes "
            "per request (genpipe serve --max_request_bytes)"
        )


# -- limits of the export (contract sidecar) --------------------------------------------------


@dataclass(frozen=True)
class _Export:
    """What a version's sidecar says: its contract (None: not a known one) and limits."""

    contract_name: str
    limits: Mapping[str, Any]

    def signature(self, key: str) -> Signature | None:
        contract = CONTRACTS.get(self.contract_name)
        try:
            return contract.signature(key) if contract else None
        except KeyError:
            return None


_exports: weakref.WeakKeyDictionary[Any, _Export | None] = weakref.WeakKeyDictionary()
_exports_lock = threading.Lock()


def _export(servable: Any) -> _Export | None:
    """The sidecar of a loaded version (read once per servable); None without one."""
    with _exports_lock:
        if servable in _exports:
            return _exports[servable]
    try:
        sidecar = read_sidecar(servable.path)
        found = _Export(str(sidecar.get("contract", "")), dict(sidecar.get("limits") or {}))
    except FileNotFoundError:
        found = None
    except (OSError, ValueError) as error:
        log.warning("%s of %r unreadable, its limits are checked in the graph only: %s",
                    SIDECAR, servable, error)  # fmt: skip
        found = None
    with _exports_lock:
        _exports[servable] = found
    return found


def _describe(servable: Any) -> str:
    return f"{servable.name} version {servable.version}"


def check_batch(
    servable: Any, shapes: Mapping[str, Sequence[int]], limits: RequestLimits
) -> None:
    """The batch (leading dimension) of every input against the export's batch limit, or
    --default_max_batch_size for a genpipe export that sets none. Models without a contract
    sidecar are not checked (their inputs need not have a batch dimension)."""
    export = _export(servable)
    if export is None:
        return
    found = batch_limit(export.limits)
    if found is None:
        name, maximum = "max_batch_size", limits.default_max_batch_size
        source = (
            f"{_describe(servable)} sets no batch limit in its contract, so the server's "
            "genpipe serve --default_max_batch_size applies"
        )
    else:
        (name, maximum), source = found, f"the limit {_describe(servable)} was exported with"
    for input_name, shape in shapes.items():
        if shape and shape[0] > maximum:
            raise invalid_argument(
                f"input '{input_name}': a batch of {shape[0]} rows is over {name} = {maximum}, "
                f"{source}; send at most {maximum} rows per request"
            )


def _image_inputs(signature: Signature) -> list[str]:
    """The encoded-image inputs of a signature whose contract sets a pixel limit: its string
    inputs (deepdream's image, style_transfer's content and style, fast_style's image)."""
    return [tensor.name for tensor in signature.inputs if tensor.dtype == "string"]


def check_images(
    servable: Any, signature_name: str, inputs: Mapping[str, np.ndarray]
) -> None:
    """Every encoded image of a signature whose export sets max_pixels, from its header and
    before the graph decodes it: PNG or JPEG, at most max_pixels (and at least min_side, when
    the export sets one), not cut short, and not enlarged past max_pixels by the signature
    (`Signature.computed_size`, DeepDream's octaves). Grayscale, palette and 16-bit PNGs pass:
    the graphs decode them to 8-bit RGB."""
    import numpy as np

    export = _export(servable)
    signature = export.signature(signature_name) if export else None
    if signature is None or PIXEL_LIMIT not in export.limits:
        return
    maximum = int(export.limits[PIXEL_LIMIT])
    min_side = int(export.limits.get(MIN_SIDE_LIMIT) or 1)
    exported = f"the limit {_describe(servable)} was exported with"
    for name in _image_inputs(signature):
        for row, data in enumerate(np.asarray(inputs.get(name, ()), dtype=object).ravel()):
            where = f"input '{name}' (row {row})"
            try:
                header = image_headers.read_header(bytes(data))
            except image_headers.NotAnImage as error:
                raise invalid_argument(
                    f"{where}: {signature_name} takes PNG or JPEG bytes; got {error}"
                ) from error
            size = f"{header.height}x{header.width}"
            if header.pixels > maximum:
                raise invalid_argument(
                    f"{where}: its {header.format} header declares {size} = {header.pixels} "
                    f"pixels, over {PIXEL_LIMIT} = {maximum}, {exported}; refused before "
                    "decoding"
                )
            if min(header.height, header.width) < min_side:
                raise invalid_argument(
                    f"{where}: a {size} image has a side under {MIN_SIDE_LIMIT} = {min_side}, "
                    f"{exported}"
                )
            if not header.complete:
                raise invalid_argument(
                    f"{where}: the {header.format} file is truncated (no end marker in its "
                    f"{len(data)} bytes); send the whole file"
                )
            rule = signature.computed_size.get(name)
            if rule is None:
                continue
            height, width = rule(header.height, header.width)
            if height * width > maximum:
                raise invalid_argument(
                    f"input '{name}' (row {row}): {signature_name} computes a "
                    f"{height}x{width} image ({height * width} pixels) from this "
                    f"{size} one, over {PIXEL_LIMIT} = {maximum}, {exported}"
                )
