"""Errors of the model server: one exception carrying a gRPC status code, and the mappings
TensorFlow Serving uses between TensorFlow errors, gRPC codes and HTTP statuses."""

from __future__ import annotations

import re
from http import HTTPStatus

import grpc

# gRPC codes by their number (TensorFlow's error codes use the same numbers).
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# The HTTP status TF Serving's REST API answers for each canonical code
# (tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request failed with a canonical status ``code`` and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status TF Serving's REST API uses for a canonical code."""
    return _HTTP_STATUS.get(code, int(HTTPStatus.INTERNAL_SERVER_ERROR))


def code_from_number(number: int) -> grpc.StatusCode:
    """The gRPC code for a TensorFlow/absl error code number (unknown numbers -> UNKNOWN)."""
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


_NODE_SUFFIX = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]")
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]\s*$")


def clean_tf_message(message: str) -> str:
    """The part of a TensorFlow runtime error a client needs.

    Session runs (and eager signature calls) wrap the graph's message in a "Graph execution
    error" preamble, maybe with a node traceback, and append node and op names; the client needs the
    message itself, e.g. ``assertion failed: [temperature must be in [0, 2]] ...``.
    """
    lines = message.strip().splitlines()
    if lines and lines[0].startswith("Graph execution error"):
        lines = lines[1:]
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("Detected at node"):
            skipping = True
            continue
        if skipping and (not line.strip() or line[:1].isspace() or line.startswith("<stack")):
            continue
        skipping = False
        kept.append(line)
    text = "\n".join(kept)
    text = _OP_SUFFIX.sub("", _NODE_SUFFIX.sub("", text)).strip()
    return text or message.strip()


def from_tf_error(error: Exception) -> ServingError:
    """A `ServingError` for an exception raised while running a signature."""
    import tensorflow as tf

    if isinstance(error, tf.errors.OpError):
        return ServingError(code_from_number(error.error_code), clean_tf_message(error.message))
    if isinstance(error, (TypeError, ValueError)):
        return invalid_argument(str(error))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
