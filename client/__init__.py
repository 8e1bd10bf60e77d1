"""Client of genpipe's served models, apart from the server (as TF Serving keeps `apis/` apart
from `model_servers/`): the gRPC client library, image helpers and `genpipe generate`.

It reads the serving contract from `contracts` and never imports the server package `serving`.
``from client import ModelServerClient`` loads TensorFlow; the names are imported on first use
so that `genpipe --help` (which registers `client.cli`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelServerClient": "client.model_client",
    "ModelServerError": "client.model_client",
    "ServerUnavailable": "client.model_client",
    "Prediction": "client.model_client",
    "TextGeneration": "client.model_client",
    "StreamedWord": "client.model_client",
    "TextScore": "client.model_client",
    "StyleTransfer": "client.model_client",
    "VersionState": "client.model_client",
    "DEFAULT_SERVER": "client.model_client",
    "GeneratedImage": "client.images",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
