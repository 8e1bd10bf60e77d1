"""Which model versions exist under a model root (and, filled in by a client, their state)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from serving.config import VERSION_DIR, model_folders
from serving.servable import SAVED_MODEL_FILES


@dataclass
class ModelVersions:
    """One model folder: versions on disk and, when a server was asked, their live state."""

    name: str
    path: Path
    complete: list[int] = field(default_factory=list)  # saved_model.pb present
    partial: list[int] = field(default_factory=list)  # version folder without it (being pushed)
    states: dict[int, str] = field(default_factory=dict)  # version -> server state
    errors: dict[int, str] = field(default_factory=dict)  # version -> load error
    server_error: str | None = None  # why the server could not say (down, unknown model...)

    @property
    def live(self) -> list[int]:
        """Versions the server has AVAILABLE."""
        return sorted(v for v, state in self.states.items() if state == "AVAILABLE")


def versions_on_disk(model_dir: str | os.PathLike) -> tuple[list[int], list[int]]:
    """(complete, partial) version numbers of a model folder."""
    complete, partial = [], []
    for child in Path(model_dir).iterdir():
        if child.is_dir() and VERSION_DIR.match(child.name):
            done = any((child / name).is_file() for name in SAVED_MODEL_FILES)
            (complete if done else partial).append(int(child.name))
    return sorted(complete), sorted(partial)


def model_versions(root: str | os.PathLike) -> list[ModelVersions]:
    """The versions on disk of every model folder under ``root``.

    The server states stay empty: `pipeline.status.ask_server` fills them in with the client.
    """
    models = []
    for folder in model_folders(root):
        complete, partial = versions_on_disk(folder)
        models.append(ModelVersions(folder.name, folder, complete, partial))
    return models
