"""Read PyTorch checkpoint files into numpy arrays, without torch and without trusting pickle.

PyTorch files come in two layouts:

* the legacy ``torch.save`` stream: five pickles back to back (magic number, protocol version,
  system info, the object, the list of storage keys) followed, for every key, by an int64
  element count and the raw little-endian storage bytes;
* the zip layout (new ``torch.save`` and TorchScript archives): ``<prefix>/data.pkl`` holds the
  object and ``<prefix>/data/<key>`` the raw storages.

In both, tensors are pickled as calls to ``torch._utils._rebuild_tensor_v2`` on a storage that is a
pickle persistent id ``('storage', <StorageType>, key, location, numel, ...)``. A restricted
``pickle.Unpickler`` maps exactly those torch names to numpy rebuilders and refuses every other
global, so a crafted file cannot run code. This is written by hand because no numpy-only reader
of the format exists as a library.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import numpy as np

__all__ = ["ScriptObject", "load", "named_arrays"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype (little endian, as torch writes it).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class ScriptObject:
    """A TorchScript module or object as plain data: its torch type name and attribute state."""

    torch_type = "__torch__"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"ScriptObject({self.torch_type})"


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co: only carries the numpy dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any):
    """numpy version of ``torch._utils._rebuild_tensor_v2``: a strided view of the storage."""
    if not size:
        return storage[offset].copy()
    if len(size) != len(stride) or offset < 0 or min(stride) < 0 or min(size) < 0:
        raise pickle.UnpicklingError(
            f"bad tensor view: offset {offset}, size {size}, stride {stride}"
        )
    if offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= storage.size:
        raise pickle.UnpicklingError("tensor view runs past the end of its storage")
    base = storage[offset:]
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(base, shape=tuple(size), strides=strides).copy()


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    return data


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
    ("torch.jit._pickle", "build_tensorlist"): list,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that knows torch tensors and TorchScript objects and nothing else."""

    def __init__(self, file: BinaryIO, load_storage: Callable[[_StorageType, str, int], Any]):
        super().__init__(file)
        self._load_storage = load_storage
        self._script_classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module.startswith("__torch__"):
            # TorchScript classes are rebuilt with NEWOBJ + BUILD: an inert data holder suffices.
            qualified = f"{module}.{name}"
            if qualified not in self._script_classes:
                self._script_classes[qualified] = type(
                    name, (ScriptObject,), {"torch_type": qualified}
                )
            return self._script_classes[qualified]
        raise pickle.UnpicklingError(f"refusing to unpickle global '{module}.{name}'")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        return self._load_storage(storage_type, str(key), int(numel))


def _load_zip(archive: zipfile.ZipFile) -> Any:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise ValueError(f"expected one data.pkl in the torch zip, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]

    def load_storage(storage_type: _StorageType, key: str, numel: int) -> np.ndarray:
        raw = archive.read(f"{prefix}data/{key}")
        array = np.frombuffer(raw, dtype=storage_type.dtype)
        if array.size < numel:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        return array

    with archive.open(pickles[0]) as f:
        return _RestrictedUnpickler(io.BytesIO(f.read()), load_storage).load()


def _load_legacy(f: BinaryIO) -> Any:
    def refuse_storage(*_: Any) -> None:
        raise pickle.UnpicklingError("storage reference in a torch file header")

    header = [_RestrictedUnpickler(f, refuse_storage).load() for _ in range(3)]
    if header[0] != _LEGACY_MAGIC:
        raise ValueError("not a torch file: bad magic number")
    object_start = f.tell()

    # Storages are written after the object pickle: note their types on a first pass, read
    # their data, then unpickle the object again with the real arrays.
    types: dict[str, _StorageType] = {}

    def note_storage(storage_type: _StorageType, key: str, numel: int) -> np.ndarray:
        types[key] = storage_type
        return np.zeros(numel, dtype=storage_type.dtype)

    _RestrictedUnpickler(f, note_storage).load()
    keys = _RestrictedUnpickler(f, refuse_storage).load()
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        dtype = types[str(key)].dtype
        raw = f.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise ValueError(f"torch file is truncated in storage {key}")
        storages[str(key)] = np.frombuffer(raw, dtype=dtype)

    f.seek(object_start)
    return _RestrictedUnpickler(f, lambda _t, key, _n: storages[key]).load()


def load(path: str | os.PathLike) -> Any:
    """Load a torch file (legacy stream or zip/TorchScript); tensors become numpy arrays.

    TorchScript modules come back as `ScriptObject`s whose ``state`` holds their attributes.
    Any pickled global other than torch tensors, storages and TorchScript classes is refused
    with ``pickle.UnpicklingError``.
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return _load_zip(archive)
    with open(path, "rb") as f:
        return _load_legacy(f)


def named_arrays(obj: Any, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """Walk a loaded object depth first, in stored order, yielding ``(dotted.name, array)``."""
    if isinstance(obj, np.ndarray):
        yield prefix, obj
    elif isinstance(obj, ScriptObject):
        yield from named_arrays(getattr(obj, "state", {}), prefix)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from named_arrays(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from named_arrays(value, f"{prefix}.{i}" if prefix else str(i))
