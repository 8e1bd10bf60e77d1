"""Model server configuration in TF Serving's own formats.

`model_config_list` text files (`--model_config_file`) are parsed with the official
`model_server_config_pb2` and `text_format`; version policies come from
`file_system_storage_path_source_pb2`. The monitoring and SSL config files use the messages in
`serving.protos`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import names
from serving.errors import invalid_argument
from serving.protos import MonitoringConfig, SSLConfig

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# Model names travel in REST paths and become folder names (`serving.names` has the rule).
MODEL_NAME = names.NAME
VERSION_DIR = re.compile(r"^\d+$")


def read_text_proto(path: str | os.PathLike, message):
    """Parse a text-format protobuf file into ``message``; errors name the file."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from error
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ValueError(f"{path}: not a valid {message.DESCRIPTOR.name}: {error}") from error


def read_model_config_file(path: str | os.PathLike) -> ModelServerConfig:
    """A `--model_config_file` (a `ModelServerConfig` in text format)."""
    config = read_text_proto(path, ModelServerConfig())
    validate_config(config)
    return config


def read_monitoring_config(path: str | os.PathLike) -> MonitoringConfig:
    """A `--monitoring_config_file`; an enabled Prometheus config gets the default path."""
    config = read_text_proto(path, MonitoringConfig())
    prometheus = config.prometheus_config
    if prometheus.enable and not prometheus.path:
        prometheus.path = DEFAULT_PROMETHEUS_PATH
    if prometheus.enable and not prometheus.path.startswith("/"):
        raise ValueError(
            f"{path}: prometheus_config.path must start with '/', got {prometheus.path!r}"
        )
    return config


def read_ssl_config(path: str | os.PathLike) -> SSLConfig:
    """A `--ssl_config_file`: PEM contents of the server key and certificate (not paths)."""
    config = read_text_proto(path, SSLConfig())
    if not config.server_key or not config.server_cert:
        raise ValueError(f"{path}: SSLConfig needs both server_key and server_cert (PEM text)")
    return config


def validate_config(config: ModelServerConfig) -> None:
    """Raise INVALID_ARGUMENT unless ``config`` is a usable `model_config_list`."""
    if config.WhichOneof("config") != "model_config_list":
        raise invalid_argument(
            "only a model_config_list is supported (custom_model_config is not); "
            "write: model_config_list { config { name: 'NAME' base_path: '/models/NAME' } }"
        )
    seen: set[str] = set()
    for model in config.model_config_list.config:
        names.check_name(model.name)
        for label, version in model.version_labels.items():
            names.check_name(label, f"model {model.name}: version label")
            names.check_version(version)
        if model.name in seen:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
        if not model.base_path:
            raise invalid_argument(f"model {model.name} has no base_path")
        if "\0" in model.base_path:
            raise invalid_argument(f"model {model.name}: base_path holds a NUL byte")
        if model.model_platform not in ("", "tensorflow"):
            raise invalid_argument(
                f"model {model.name} requests unsupported platform {model.model_platform!r}; "
                "this server serves 'tensorflow' SavedModels"
            )
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise invalid_argument(f"model {model.name}: specific version policy lists no versions")


def config_for_model(name: str, base_path: str | os.PathLike) -> ModelServerConfig:
    """The config of `--model_name NAME --model_base_path PATH`."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = os.path.abspath(base_path)
    model.model_platform = "tensorflow"
    validate_config(config)
    return config


def model_folders(root: str | os.PathLike) -> list[Path]:
    """Folders under ``root`` holding at least one integer-named version folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir() or not MODEL_NAME.match(child.name):
            continue
        if any(VERSION_DIR.match(v.name) and v.is_dir() for v in child.iterdir()):
            found.append(child)
    return found


def config_for_root(
    root: str | os.PathLike,
    base_path: str | None = None,
    previous: ModelServerConfig | None = None,
) -> ModelServerConfig:
    """One `ModelConfig` per model folder under ``root``.

    ``base_path`` replaces ``root`` in the written paths, for a server that sees the same folder
    elsewhere (``/models`` inside the tensorflow/serving container). A model already in
    ``previous`` keeps its entry there (version policy, labels, logging) with the new path.
    """
    kept = {m.name: m for m in previous.model_config_list.config} if previous else {}
    config = ModelServerConfig()
    config.model_config_list.SetInParent()
    prefix = base_path.rstrip("/") if base_path else os.path.abspath(root)
    for folder in model_folders(root):
        model = config.model_config_list.config.add()
        if folder.name in kept:
            model.CopyFrom(kept[folder.name])
        model.name = folder.name
        model.base_path = f"{prefix}/{folder.name}"
        model.model_platform = "tensorflow"
    return config


# The head of a written models.config: text-format comments do not survive a parse, so what
# a reader needs to know is written with every regeneration.
HEADER = """\
# TensorFlow Serving model config (ModelServerConfig in text format), one entry per model
# folder, written by `genpipe serving-config {command}`.
# Rerun it after pushing a new model: entries already here keep their version policy and
# labels. Read by the tensorflow/serving image (--model_config_file) and `genpipe serve`.
"""


def config_text(config: ModelServerConfig, command: str | None = None) -> str:
    """``config`` in the text format `--model_config_file` reads; with the header comment
    naming ``command`` (the serving-config arguments that regenerate it) when given."""
    header = HEADER.format(command=command) if command else ""
    return header + text_format.MessageToString(config)


def write_models_config(
    root: str | os.PathLike,
    path: str | os.PathLike,
    base_path: str | None = None,
    command: str | None = None,
) -> ModelServerConfig:
    """Write a `models.config` for the model folders under ``root`` and return it; an existing
    file at ``path`` gives the entries it has their settings (see `config_for_root`)."""
    previous = read_model_config_file(path) if Path(path).is_file() else None
    config = config_for_root(root, base_path, previous)
    Path(path).write_text(config_text(config, command))
    return config


def aspired_versions(model: ModelConfig, ready: Iterable[int]) -> set[int]:
    """The versions the model's version policy wants served, among the ``ready`` ones.

    As TF Serving: `latest { num_versions: N }` (the default, N = 1) keeps the N highest,
    `all {}` every one, `specific { versions: ... }` the listed ones present on disk.
    """
    ready = sorted(set(ready), reverse=True)
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(ready)
    if choice == "specific":
        return set(ready) & set(policy.specific.versions)
    count = policy.latest.num_versions if choice == "latest" else 0
    return set(ready[: max(count, 1)])


def labelled_entry(
    model: ModelConfig, labels: Mapping[str, int], also_serve: Iterable[int] = ()
) -> ModelConfig:
    """A copy of ``model`` with exactly ``labels`` as its version labels and a `specific`
    policy serving the labelled versions and ``also_serve`` (TF Serving moves a label only
    onto a version it has loaded, so every labelled version stays aspired)."""
    entry = ModelConfig()
    entry.CopyFrom(model)
    entry.ClearField("version_labels")
    for label, version in labels.items():
        entry.version_labels[label] = version
    versions = sorted({*labels.values(), *also_serve})
    if not versions:
        raise ValueError(f"model {model.name}: a specific version policy needs a version")
    entry.model_version_policy.specific.ClearField("versions")
    entry.model_version_policy.specific.versions.extend(versions)
    return entry
