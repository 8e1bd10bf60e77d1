"""Files the tools keep (schedules, serving targets, the kept models.config), replaced whole."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` by ``text`` in one step: a temporary file beside it, then a rename.

    Hand-written: portalocker.open_atomic refuses to replace an existing file. Callers that may
    race hold their own lock, so one temporary name per process is enough.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # umask applies
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
