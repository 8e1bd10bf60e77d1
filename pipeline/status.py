"""Which model versions exist under a root, how good they are, where they came from, which is live.

Pushed versions are read from ML Metadata: `<root>/metadata.sqlite`, or a remote store
(`MetadataSource`: a `MetadataStoreClientConfig` host and port). Each pushed `PushedModel` leads
back to the Pusher's inputs (the `Model` and its `ModelBlessing`, whose properties carry the
evaluation metrics), to the Trainer that wrote the model (its `ModelRun` holds the TensorBoard
logs) and to the `Examples` it was trained on. The folders under `<root>/serving/` and, when
asked, a running model server say what is on disk and what is live. Files are read through
`tf.io.gfile`, so a root may be a local folder or a URL such as `gs://bucket/genpipe`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipeline.runner import URL_SCHEME, RootLayout

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
TIME_FORMAT = "%Y-%m-%d %H:%M:%SZ"  # UTC times shown by status and the report
DEFAULT_METADATA_TIMEOUT = 10.0  # seconds per call to a remote ML Metadata store


class RootError(ValueError):
    """The root (or its ML Metadata store) cannot be read; the message names it."""


@dataclasses.dataclass(frozen=True)
class MetadataSource:
    """A remote ML Metadata store (a `metadata_store_server`) instead of the root's sqlite."""

    host: str
    port: int
    root_cert: str | None = None  # PEM file of the CA that signed the store's TLS certificate
    timeout: float = DEFAULT_METADATA_TIMEOUT

    def client_config(self) -> Any:
        """The `MetadataStoreClientConfig`, with its SSL config when a root cert is given."""
        from ml_metadata.proto import metadata_store_pb2

        if not 1 <= self.port <= 65535:
            raise ValueError(f"--metadata-port {self.port}: expected a port in [1, 65535]")
        config = metadata_store_pb2.MetadataStoreClientConfig(
            host=self.host, port=self.port, client_timeout_sec=self.timeout
        )
        if self.root_cert is not None:
            config.ssl_config.custom_ca = _read_text(self.root_cert, "--root-cert")
        return config

    def __str__(self) -> str:
        return f"ML Metadata at {self.host}:{self.port}"


@contextlib.contextmanager
def reading(root: str, metadata: MetadataSource | None) -> Iterator[None]:
    """Turns a store that cannot be reached or read into a RootError naming it."""
    from ml_metadata import errors

    try:
        yield
    except (errors.UnavailableError, errors.DeadlineExceededError, errors.InternalError,
            errors.UnknownError, errors.PermissionDeniedError,
            errors.UnauthenticatedError) as error:
        where = metadata or f"ML Metadata of --root {root}"
        raise RootError(f"{where}: cannot read it ({first_line(error)})") from None


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
    tensorboard: str = ""  # the Trainer's ModelRun folder: its TensorBoard logs
    examples_id: int | None = None  # the ExampleGen output the model was trained on
    samples: str = ""  # the ServingValidator's sample PNGs of this version

    @property
    def live(self) -> bool:
        return self.server_state == "AVAILABLE"


# -- files: local folders and URLs alike ----------------------------------------------------


def is_url(root: str) -> bool:
    return bool(URL_SCHEME.match(root))


def _read_text(path: str, flag: str) -> str:
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "r") as handle:
            return handle.read()
    except (tf.errors.OpError, OSError) as error:
        raise ValueError(f"{flag} {path}: cannot read it ({first_line(error)})") from None


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_root(root: str) -> None:
    """RootError naming ``root`` when it is not a folder (locally or behind its URL)."""
    import tensorflow as tf

    try:
        found = tf.io.gfile.isdir(root)
    except tf.errors.OpError as error:  # an unknown scheme, no credentials...
        raise RootError(f"--root {root}: cannot read it ({first_line(error)})") from None
    if not found:
        raise RootError(
            f"--root {root}: no such folder (give the --root of `genpipe run`, a local folder "
            "or a URL such as gs://bucket/genpipe)"
        )


def _local_copy(path: str) -> str:
    """A local copy of the file at ``path`` (sqlite opens local files only), removed at exit."""
    import tensorflow as tf

    folder = tempfile.mkdtemp(prefix="genpipe-metadata-")
    atexit.register(shutil.rmtree, folder, True)
    copy = os.path.join(folder, os.path.basename(path))
    tf.io.gfile.copy(path, copy, overwrite=True)
    return copy


def open_store(root: str, metadata: MetadataSource | None = None) -> Any | None:
    """The ML Metadata store of ``root`` (read-only), None when the root has none yet."""
    import tensorflow as tf
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    if metadata is not None:
        return metadata_store.MetadataStore(metadata.client_config())
    path = RootLayout(root).metadata_path
    if not tf.io.gfile.exists(path):
        return None
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = _local_copy(path) if is_url(root) else path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


# -- ML Metadata lineage ---------------------------------------------------------------------


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def properties(artifact: Any) -> dict[str, Any]:
    """An artifact's or execution's custom properties as plain values."""
    return {k: _value(v) for k, v in artifact.custom_properties.items()}


def utc(milliseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.timezone.utc)
    return moment.strftime(TIME_FORMAT)


def artifacts_of_type(store: Any, type_name: str) -> list[Any]:
    """Every artifact of a type, [] when no pipeline has made one yet."""
    from ml_metadata import errors

    try:
        return list(store.get_artifacts_by_type(type_name))
    except errors.NotFoundError:
        return []


def _events(store: Any, execution_id: int, kind: int) -> dict[str, Any]:
    found = {}
    for event in store.get_events_by_execution_ids([execution_id]):
        if event.type == kind and event.path.steps:
            found[event.path.steps[0].key] = store.get_artifacts_by_id([event.artifact_id])[0]
    return found


def inputs(store: Any, execution_id: int) -> dict[str, Any]:
    """An execution's input artifacts by key."""
    from ml_metadata.proto import metadata_store_pb2

    return _events(store, execution_id, metadata_store_pb2.Event.INPUT)


def outputs(store: Any, execution_id: int) -> dict[str, Any]:
    """An execution's output artifacts by key."""
    from ml_metadata.proto import metadata_store_pb2

    return _events(store, execution_id, metadata_store_pb2.Event.OUTPUT)


def producer(store: Any, artifact_id: int) -> int | None:
    """The execution that wrote an artifact."""
    from ml_metadata.proto import metadata_store_pb2

    for event in store.get_events_by_artifact_ids([artifact_id]):
        if event.type == metadata_store_pb2.Event.OUTPUT:
            return event.execution_id
    return None


def raw_examples(store: Any, examples: Any) -> Any:
    """Follows transformed examples back to the ExampleGen's output they were made from."""
    while examples is not None:
        made_by = producer(store, examples.id)
        upstream = inputs(store, made_by).get("examples") if made_by else None
        if upstream is None:
            return examples
        examples = upstream
    return None


def _contexts(store: Any, execution_id: int, status: VersionStatus) -> None:
    types = {t.id: t.name for t in store.get_context_types()}
    for context in store.get_contexts_by_execution(execution_id):
        if types.get(context.type_id) == "pipeline":
            status.pipeline = context.name
        elif types.get(context.type_id) == "pipeline_run":
            status.run = context.name


def _training(store: Any, model: Any, status: VersionStatus) -> None:
    """The model's TensorBoard folder and training examples, from the execution that wrote it."""
    status.model_uri = model.uri
    trainer = producer(store, model.id)
    if trainer is None:
        return
    model_run = outputs(store, trainer).get("model_run")
    status.tensorboard = model_run.uri if model_run is not None else ""
    examples = raw_examples(store, inputs(store, trainer).get("examples"))
    if examples is not None:
        source = properties(examples).get("source") or examples.uri
        status.trained_on = f"Examples #{examples.id} from {source}"
        status.examples_id = examples.id


def pushed_versions(store: Any) -> list[VersionStatus]:
    """Every successful push recorded in ``store``, with metrics and lineage."""
    versions = []
    for pushed in artifacts_of_type(store, "PushedModel"):
        props = properties(pushed)
        if not props.get("pushed"):
            continue
        destination = str(props.get("pushed_destination", "")).rstrip("/")
        status = VersionStatus(
            model=os.path.basename(os.path.dirname(destination)),
            version=int(props.get("pushed_version") or os.path.basename(destination) or 0),
            pushed_at=utc(pushed.create_time_since_epoch),
        )
        execution = producer(store, pushed.id)
        if execution is not None:
            _contexts(store, execution, status)
            found = inputs(store, execution)
            if "model" in found:
                _training(store, found["model"], status)
            if "model_blessing" in found:
                blessing = properties(found["model_blessing"])
                status.blessing = str(blessing.get("blessing_message", ""))
                status.metrics = {
                    k: float(v)
                    for k, v in blessing.items()
                    if k not in _NOT_METRICS and isinstance(v, int | float)
                }
            if "infra_blessing" in found:
                infra = properties(found["infra_blessing"])
                status.serving_check = str(infra.get("blessing_message", ""))
                status.samples = str(infra.get("samples") or "")
        versions.append(status)
    return versions


# -- the serving folder, the server, the labels ---------------------------------------------


def versions_on_disk(root: str) -> list[ModelVersions]:
    """The model folders under `<root>/serving` and their versions, read through tf.io.gfile."""
    import tensorflow as tf

    from serving.config import MODEL_NAME, VERSION_DIR
    from serving.servable import SAVED_MODEL_FILES
    from serving.status import ModelVersions

    serving = os.path.dirname(RootLayout(root).serving_dir("x"))
    if not tf.io.gfile.isdir(serving):
        return []
    models = []
    for name in sorted(n.rstrip("/") for n in tf.io.gfile.listdir(serving)):
        folder = os.path.join(serving, name)
        if name.startswith(".") or not MODEL_NAME.match(name) or not tf.io.gfile.isdir(folder):
            continue
        found = ModelVersions(name, folder)  # type: ignore[arg-type]  # a URL is no Path
        for child in (c.rstrip("/") for c in tf.io.gfile.listdir(folder)):
            path = os.path.join(folder, child)
            if not VERSION_DIR.match(child) or not tf.io.gfile.isdir(path):
                continue
            done = any(tf.io.gfile.exists(os.path.join(path, f)) for f in SAVED_MODEL_FILES)
            (found.complete if done else found.partial).append(int(child))
        if found.complete or found.partial:
            found.complete.sort()
            found.partial.sort()
            models.append(found)
    return models


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


def labels_of(root: str) -> dict[str, dict[str, int]]:
    """{model: {label: version}} of the root's kept models.config (`pipeline.promotion`); a URL
    root's `serving.json` and models.config are read through tf.io.gfile."""
    from pipeline.promotion import TARGET_FILE, kept_labels

    if not is_url(root):
        return kept_labels(root)
    import tensorflow as tf
    from google.protobuf import text_format

    from serving.config import ModelServerConfig

    target = os.path.join(root, TARGET_FILE)
    if not tf.io.gfile.exists(target):
        return {}
    config_path = json.loads(_read_text(target, "serving target")).get("models_config", "")
    if not config_path or not tf.io.gfile.exists(config_path):
        return {}
    config = text_format.Parse(_read_text(config_path, "models.config"), ModelServerConfig())
    return {m.name: dict(m.version_labels) for m in config.model_config_list.config
            if m.version_labels}


def model_status(
    root: str,
    server: str | None = None,
    metadata: MetadataSource | None = None,
    **client_options: Any,
) -> list[VersionStatus]:
    """Versions of every model under `<root>/serving`, joined with what ML Metadata (the root's
    or ``metadata``) and a server know, and the version labels of the root's kept models.config.

    RootError when the root is not a folder or its store cannot be reached."""
    check_root(root)
    store = open_store(root, metadata)
    by_key: dict[tuple[str, int], VersionStatus] = {}
    with reading(root, metadata):
        pushed = pushed_versions(store) if store is not None else []
    for status in pushed:
        by_key[(status.model, status.version)] = status
    models = versions_on_disk(root)
    if server is not None and models:
        ask_server(models, server, **client_options)
    for model in models:
        for version in [*model.complete, *model.partial, *model.states]:
            status = by_key.setdefault((model.name, version), VersionStatus(model.name, version))
            status.on_disk = version in model.complete or version in model.partial
            status.partial = version in model.partial
            status.server_state = model.states.get(version, "")
            status.server_error = model.errors.get(version, model.server_error or "")
    for model_name, labels in labels_of(root).items():
        for label, version in sorted(labels.items()):
            status = by_key.setdefault((model_name, version), VersionStatus(model_name, version))
            status.labels.append(label)
    return sorted(by_key.values(), key=lambda s: (s.model, -s.version))


def label_moves(root: str, metadata: MetadataSource | None = None) -> list[Any]:
    """The label moves recorded in the root's store (or ``metadata``), oldest first."""
    store = open_store(root, metadata)
    with reading(root, metadata):
        return [] if store is None else moves_in(store)


def moves_in(store: Any) -> list[Any]:
    """The `pipeline.promotion.LabelMove`s recorded in ``store``, oldest first (as
    `promotion.label_moves` reads them from a local root)."""
    from ml_metadata import errors
    from ml_metadata.proto import metadata_store_pb2 as pb

    from pipeline.promotion import EXECUTION_TYPE, LabelMove

    try:
        executions = store.get_executions_by_type(EXECUTION_TYPE)
    except errors.NotFoundError:
        return []
    moves = []
    for execution in sorted(executions, key=lambda e: e.id):
        props = {k: _value(v) for k, v in execution.properties.items()}
        moves.append(LabelMove(
            id=execution.id, model=props["model"], label=props["label"], action=props["action"],
            from_version=props.get("from_version"), to_version=props["to_version"],
            user=props["user"], server=props["server"],
            at=utc(execution.create_time_since_epoch),
            moved=execution.last_known_state == pb.Execution.COMPLETE, message=props["message"],
        ))
    return moves
