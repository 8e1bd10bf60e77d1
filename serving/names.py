"""What a model name, version label or version number may be, wherever one arrives: REST URLs,
gRPC ModelSpecs and `models.config`. One rule for all, so a name that could climb out of a base
path (``../``, an absolute path), hide a NUL byte or fill the logs is refused with
INVALID_ARGUMENT before anything is looked up or read."""

from __future__ import annotations

import re

from serving.errors import invalid_argument

MAX_NAME_LENGTH = 255  # a file name's limit on common file systems
MAX_VERSION = 2**63 - 1  # versions are int64 (ModelSpec.version, folder names)
# No path separators, no ':' (REST's verb separator), no spaces or control characters.
NAME = re.compile(r"^[^/\\:\s\x00-\x1f\x7f]+\Z")
RULE = (
    f"1 to {MAX_NAME_LENGTH} characters without '/', '\\', ':', spaces or control characters, "
    "and not '.' or '..'"
)


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")


def check_name(value: str, what: str = "model name") -> str:
    """``value`` when it is a usable model name (or label, with ``what``); else INVALID_ARGUMENT."""
    if (
        not value
        or len(value) > MAX_NAME_LENGTH
        or value in (".", "..")
        or not NAME.match(value)
    ):
        length = f" ({len(value)} characters)" if len(value) > MAX_NAME_LENGTH else ""
        raise invalid_argument(f"{what} {_shown(value)}{length} is not allowed: use {RULE}")
    return value


def _out_of_range(text: str) -> Exception:
    return invalid_argument(
        f"model version {_shown(text)} is out of range: versions are integers from 0 to "
        f"{MAX_VERSION}"
    )


def check_version(version: int) -> int:
    """``version`` when it is an int64 of 0 or more; else INVALID_ARGUMENT."""
    if not 0 <= version <= MAX_VERSION:
        raise _out_of_range(str(version))
    return version


def parse_version(text: str) -> int:
    """A version number from a URL; INVALID_ARGUMENT unless it is a decimal int64."""
    if not (text.isascii() and text.isdigit()):
        raise invalid_argument(f"model version {_shown(text)} is not a number")
    if len(text) > len(str(MAX_VERSION)):  # before int(): thousands of digits are slow
        raise _out_of_range(text)
    return check_version(int(text))


def check_spec(name: str, version: int | None, label: str | None) -> None:
    """The parts of a model spec a request gave."""
    if not name:
        raise invalid_argument("ModelSpec has no name specified.")
    check_name(name)
    if version is not None:
        check_version(version)
    if label:
        check_name(label, "version label")
