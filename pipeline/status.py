"""Which model versions exist under a root, how good they are, where they came from, which is live.

Pushed versions are read from ML Metadata (`<root>/metadata.sqlite`): each pushed `PushedModel`
leads back to the Pusher's inputs (the `Model` and its `ModelBlessing`, whose properties carry the
evaluation metrics) and to the Trainer's inputs (the `Examples` the model was trained on). The
folders under `<root>/serving/` and, when asked, a running model server say what is on disk and
what is live.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.status import ModelVersions

# Blessing properties that are bookkeeping, not metrics.
_NOT_METRICS = {
    "blessed",
    "current_model_id",
    "current_model",
    "baseline_model_id",
    "baseline_model",
    "is_external",
    "tfx_version",
    "blessing_message",
}


@dataclasses.dataclass
class VersionStatus:
    """One version of one served model."""

    model: str
    version: int
    on_disk: bool = False
    partial: bool = False
    server_state: str = ""  # AVAILABLE, LOADING, END ... when a server was asked
    server_error: str = ""
    pushed_at: str = ""
    pipeline: str = ""
    run: str = ""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    blessing: str = ""
    model_uri: str = ""
    trained_on: str = ""
    serving_check: str = ""  # the ServingValidator's message (TF Serving's loading path)
    labels: list[str] = dataclasses.field(default_factory=list)  # in the kept models.config

    @property
    def live(self) -> bool:
        return self.server_state == "AVAILABLE"


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _store(metadata_path: str) -> Any:
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _inputs(store: Any, execution_id: int) -> dict[str, Any]:
    from ml_metadata.proto import metadata_store_pb2

    events = store.get_events_by_execution_ids([execution_id])
    found = {}
    for event in events:
        if event.type == metadata_store_pb2.Event.INPUT and event.path.steps:
            found[event.path.steps[0].key] = store.get_artifacts_by_id([event.artifact_id])[0]
    return found


def _producer(store: Any, artifact_id: int) -> int | None:
    from ml_metadata.proto import metadata_store_pb2

    for event in store.get_events_by_artifact_ids([artifact_id]):
        if event.type == metadata_store_pb2.Event.OUTPUT:
            return event.execution_id
    return None


def _raw_examples(store: Any, examples: Any) -> Any:
    """Follows transformed examples back to the ExampleGen's output they were made from."""
    while examples is not None:
        producer = _producer(store, examples.id)
        upstream = _inputs(store, producer).get("examples") if producer else None
        if upstream is None:
            return examples
        examples = upstream
    return None


def pushed_from_metadata(metadata_path: str) -> list[VersionStatus]:
    """Every successful push recorded in the store, with metrics and lineage."""
    if not os.path.isfile(metadata_path):
        return []
    store = _store(metadata_path)
    versions = []
    for pushed in store.get_artifacts_by_type("PushedModel"):
        props = {k: _value(v) for k, v in pushed.custom_properties.items()}
        if not props.get("pushed"):
            continue
        destination = str(props.get("pushed_destination", ""))
        status = VersionStatus(
            model=os.path.basename(os.path.dirname(destination.rstrip("/"))),
            version=int(props.get("pushed_version") or os.path.basename(destination) or 0),
            pushed_at=datetime.datetime.fromtimestamp(
                pushed.create_time_since_epoch / 1000, tz=datetime.timezone.utc
            ).strftime("%Y-%m-%d %H:%M:%SZ"),
        )
        execution = _producer(store, pushed.id)
        if execution is not None:
            contexts = store.get_contexts_by_execution(execution)
            types = {t.id: t.name for t in store.get_context_types()}
            for context in contexts:
                if types.get(context.type_id) == "pipeline":
                    status.pipeline = context.name
                elif types.get(context.type_id) == "pipeline_run":
                    status.run = context.name
            inputs = _inputs(store, execution)
            if "model" in inputs:
                model = inputs["model"]
                status.model_uri = model.uri
                trainer = _producer(store, model.id)
                examples = _raw_examples(store, _inputs(store, trainer).get("examples"))
                if examples is not None:
                    source = (
                        _value(examples.custom_properties["source"])
                        if ("source" in examples.custom_properties)
                        else examples.uri
                    )
                    status.trained_on = f"Examples #{examples.id} from {source}"
            if "model_blessing" in inputs:
                blessing = {
                    k: _value(v) for k, v in inputs["model_blessing"].custom_properties.items()
                }
                status.blessing = str(blessing.get("blessing_message", ""))
                status.metrics = {
                    k: float(v)
                    for k, v in blessing.items()
                    if k not in _NOT_METRICS and isinstance(v, int | float)
                }
            if "infra_blessing" in inputs:
                properties = inputs["infra_blessing"].custom_properties
                if "blessing_message" in properties:
                    status.serving_check = str(_value(properties["blessing_message"]))
        versions.append(status)
    return versions


def ask_server(models: list[ModelVersions], server: str, **client_options: Any) -> None:
    """Fill in each model's version states and load errors as ``server`` reports them.

    ``client_options`` go to `ModelServerClient` (timeout, root_cert, token). A server that is
    down or does not know a model sets ``server_error`` instead of raising.
    """
    from client import ModelServerClient, ModelServerError

    with ModelServerClient(server, **{"timeout": 10.0, **client_options}) as client:
        for model in models:
            try:
                for state in client.status(model.name):
                    model.states[state.version] = state.state
                    if state.error_message:
                        model.errors[state.version] = state.error_message
            except ModelServerError as error:
                model.server_error = str(error)


def model_status(
    root: str, server: str | None = None, **client_options: Any
) -> list[VersionStatus]:
    """Versions of every model under `<root>/serving`, joined with what MLMD and a server know,
    and the version labels of the root's kept models.config (`pipeline.promotion`)."""
    from pipeline.promotion import kept_labels
    from serving.status import model_versions

    by_key: dict[tuple[str, int], VersionStatus] = {}
    for status in pushed_from_metadata(os.path.join(root, "metadata.sqlite")):
        by_key[(status.model, status.version)] = status
    serving_root = Path(root) / "serving"
    models = model_versions(serving_root) if serving_root.is_dir() else []
    if server is not None and models:
        ask_server(models, server, **client_options)
    for model in models:
        for version in [*model.complete, *model.partial, *model.states]:
            status = by_key.setdefault((model.name, version), VersionStatus(model.name, version))
            status.on_disk = version in model.complete or version in model.partial
            status.partial = version in model.partial
            status.server_state = model.states.get(version, "")
            status.server_error = model.errors.get(version, model.server_error or "")
    for model_name, labels in kept_labels(root).items():
        for label, version in sorted(labels.items()):
            status = by_key.setdefault((model_name, version), VersionStatus(model_name, version))
            status.labels.append(label)
    return sorted(by_key.values(), key=lambda s: (s.model, -s.version))
