"""Promotion and rollback of pushed versions on a live model server, through version labels.

A root's serving target (`ROOT/serving.json`) names the server and the `models.config` kept for
it. `move_label` loads the version with one HandleReloadConfigRequest, waits for AVAILABLE
(GetModelStatus), for a canary replays its warmup requests, moves the label with a second
reload, then replaces the kept file and records a `genpipe.LabelMove` execution in ML Metadata;
a failure reloads the kept config and moves nothing. docs/operations.md ("Promotion and
rollback") is the user's description of all this.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import getpass
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.files import write_atomically

TARGET_FILE = "serving.json"
DEFAULT_MODELS_CONFIG = os.path.join("serving", "models.config")
LOCK_FILE = ".promotion.lock"
CANARY, STABLE = "canary", "stable"
ACTIONS = {"canary": CANARY, "promote": STABLE, "rollback": STABLE}  # action -> the label moved
EXECUTION_TYPE = "genpipe.LabelMove"
DEFAULT_WAIT_SECONDS = 300.0
SERVER = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
HEADER = """\
# TensorFlow Serving model config kept by genpipe for the root {root}
# `genpipe canary`, `promote` and `rollback` move the version labels here once the server took
# them (docs/operations.md). Serve it with --model_config_file; hand edits are kept.
"""

Say = Callable[[str], None]


# -- the serving target ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServingTarget:
    """The model server a root's versions are promoted on (`ROOT/serving.json`)."""

    server: str  # host:port of its gRPC API
    models_config: str  # absolute path of the models.config kept for it
    base_path: str | None = None  # where the server sees ROOT/serving (None: the same path)
    root_cert: str | None = None  # PEM file of the CA that signed a TLS server's certificate
    token_file: str | None = None  # file holding the bearer token the server wants

    def client(self, timeout: float) -> Any:
        """A `client.ModelServerClient` for the server, ``timeout`` seconds per call."""
        from client import ModelServerClient

        token = Path(self.token_file).read_text().strip() if self.token_file else None
        return ModelServerClient(self.server, timeout=timeout, root_cert=self.root_cert,
                                 token=token)


FIELDS = [field.name for field in dataclasses.fields(ServingTarget)]


def target_path(root: str | os.PathLike) -> Path:
    return Path(root) / TARGET_FILE


def check_server(server: str) -> str:
    """``server`` if it is HOST:PORT with a port in [1, 65535], else ValueError."""
    match = SERVER.match(server)
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"--server {server!r}: expected HOST:PORT with a port in [1, 65535]")
    return server


def load_target(root: str | os.PathLike) -> ServingTarget | None:
    """The root's serving target, None when it has none; ValueError names a bad field."""
    path = target_path(root)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with the fields {FIELDS}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; allowed: {FIELDS}")
    for name in ("server", "models_config"):
        if not isinstance(data.get(name), str):
            raise ValueError(f"{path}: field {name!r} must be a string")
    try:
        check_server(data["server"])
    except ValueError as error:
        raise ValueError(f"{path}: field 'server': {error}") from None
    return ServingTarget(**data)


def require_target(root: str | os.PathLike) -> ServingTarget:
    target = load_target(root)
    if target is None:
        raise ValueError(
            f"--root {root} has no serving target ({target_path(root)}); set one with "
            f"`genpipe serving-target set --root {root} --server HOST:PORT`"
        )
    return target


def serving_root(root: str | os.PathLike) -> Path:
    return Path(root) / "serving"


def _models_config_text(root: str | os.PathLike, config: Any) -> str:
    from serving.config import config_text

    return HEADER.format(root=os.path.abspath(root)) + config_text(config)


def read_kept(target: ServingTarget) -> Any:
    """The kept `ModelServerConfig`; ValueError names the file when it is missing or bad."""
    from serving.config import read_model_config_file
    from serving.errors import ServingError

    try:
        return read_model_config_file(target.models_config)
    except (ValueError, ServingError) as error:
        raise ValueError(
            f"{target.models_config}: {error} (fix it, or write it again with "
            "`genpipe serving-target set`)"
        ) from error


def set_target(
    root: str | os.PathLike,
    server: str,
    *,
    models_config: str | os.PathLike | None = None,
    base_path: str | None = None,
    root_cert: str | os.PathLike | None = None,
    token_file: str | os.PathLike | None = None,
) -> ServingTarget:
    """Write `ROOT/serving.json`; a models.config that does not exist yet is written with one
    entry per model folder under ROOT/serving (an existing one is kept as it is)."""
    from serving.config import config_for_root

    if not Path(root).is_dir():
        raise ValueError(f"--root {root}: not a folder (run `genpipe run MODEL --root {root}`)")
    for flag, path in (("--root-cert", root_cert), ("--token-file", token_file)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{flag} {path}: no such file")
    if base_path is not None and not base_path.startswith("/"):
        raise ValueError(f"--base-path {base_path!r}: must be an absolute path such as /models")
    config_path = Path(models_config or Path(root) / DEFAULT_MODELS_CONFIG).absolute()
    target = ServingTarget(
        server=check_server(server),
        models_config=str(config_path),
        base_path=base_path,
        root_cert=str(Path(root_cert).absolute()) if root_cert else None,
        token_file=str(Path(token_file).absolute()) if token_file else None,
    )
    if config_path.is_file():
        read_kept(target)
    else:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config = config_for_root(serving_root(root), base_path)
        write_atomically(config_path, _models_config_text(root, config))
    write_atomically(target_path(root), json.dumps(dataclasses.asdict(target), indent=2) + "\n")
    return target


# -- ML Metadata: the record of every move -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelMove:
    """One recorded move (or refused move) of a label: a `genpipe.LabelMove` execution."""

    id: int
    model: str
    label: str
    action: str  # canary, promote, rollback
    from_version: int | None
    to_version: int
    user: str
    server: str
    at: str  # UTC, the execution's create time
    moved: bool  # COMPLETE; a refused move is FAILED and leaves every label where it was
    message: str


_PROPERTIES = {
    "model": "STRING",
    "label": "STRING",
    "action": "STRING",
    "from_version": "INT",
    "to_version": "INT",
    "user": "STRING",
    "server": "STRING",
    "message": "STRING",
}


def _store(root: str | os.PathLike, readonly: bool) -> Any:
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(os.fspath(root), "metadata.sqlite")
    modes = metadata_store_pb2.SqliteMetadataSourceConfig
    config.sqlite.connection_mode = modes.READONLY if readonly else modes.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(config)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}"


def _pushed_model(store: Any, model: str, version: int) -> Any | None:
    """The latest `PushedModel` artifact of ``model`` ``version``, if a pipeline pushed it."""
    from ml_metadata import errors

    try:
        artifacts = store.get_artifacts_by_type("PushedModel")
    except errors.NotFoundError:  # no pipeline has pushed into this store
        return None
    found = None
    for artifact in artifacts:
        destination = artifact.custom_properties["pushed_destination"].string_value
        parent, name = os.path.split(destination.rstrip("/"))
        if os.path.basename(parent) == model and name == str(version):
            found = artifact
    return found


def record_move(
    root: str | os.PathLike,
    *,
    model: str,
    label: str,
    action: str,
    from_version: int | None,
    to_version: int,
    server: str,
    moved: bool,
    message: str,
) -> int:
    """Record a label move in the root's ML Metadata store; returns the execution id. The
    pushed model it labels (when a pipeline pushed it) is the execution's input."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    store = _store(root, readonly=False)
    execution_type = pb.ExecutionType(name=EXECUTION_TYPE)
    for name, kind in _PROPERTIES.items():
        execution_type.properties[name] = pb.PropertyType.Value(kind)
    execution = pb.Execution(
        type_id=store.put_execution_type(execution_type),
        last_known_state=pb.Execution.COMPLETE if moved else pb.Execution.FAILED,
    )
    values = {
        "model": model, "label": label, "action": action, "from_version": from_version,
        "to_version": to_version, "user": _user(), "server": server, "message": message,
    }
    for name, value in values.items():
        if value is None:
            continue
        if _PROPERTIES[name] == "INT":
            execution.properties[name].int_value = value
        else:
            execution.properties[name].string_value = value
    pushed = _pushed_model(store, model, to_version)
    inputs = []
    if pushed is not None:
        event = pb.Event(type=pb.Event.INPUT)
        event.path.steps.add().key = "pushed_model"
        inputs.append((pushed, event))
    execution_id, _, _ = store.put_execution(execution, inputs, [])
    return execution_id


def label_moves(root: str | os.PathLike, model: str | None = None) -> list[LabelMove]:
    """The recorded moves (refused ones too), oldest first; of one model when given."""
    from ml_metadata import errors
    from ml_metadata.proto import metadata_store_pb2 as pb

    if not (Path(root) / "metadata.sqlite").is_file():
        return []
    try:
        executions = _store(root, readonly=True).get_executions_by_type(EXECUTION_TYPE)
    except errors.NotFoundError:
        return []
    moves = []
    for execution in sorted(executions, key=lambda e: e.id):
        props = execution.properties
        if model is not None and props["model"].string_value != model:
            continue
        at = datetime.datetime.fromtimestamp(
            execution.create_time_since_epoch / 1000, tz=datetime.timezone.utc
        )
        moves.append(LabelMove(
            id=execution.id,
            model=props["model"].string_value,
            label=props["label"].string_value,
            action=props["action"].string_value,
            from_version=props["from_version"].int_value if "from_version" in props else None,
            to_version=props["to_version"].int_value,
            user=props["user"].string_value,
            server=props["server"].string_value,
            at=at.strftime("%Y-%m-%d %H:%M:%SZ"),
            moved=execution.last_known_state == pb.Execution.COMPLETE,
            message=props["message"].string_value,
        ))
    return moves


def previous_stable(moves: list[LabelMove], current: int | None) -> int | None:
    """The version `stable` goes back to from ``current``: the latest earlier holder of
    `stable` that no rollback moved away from."""
    good: list[int] = []
    for move in moves:
        if not move.moved or move.label != STABLE:
            continue
        if move.action == "rollback" and move.from_version is not None:
            good = [v for v in good if v != move.from_version]
        good = [v for v in good if v != move.to_version] + [move.to_version]
    earlier = [v for v in good if v != current]
    return earlier[-1] if earlier else None


# -- labels ----------------------------------------------------------------------------------


def kept_labels(root: str | os.PathLike) -> dict[str, dict[str, int]]:
    """{model: {label: version}} of the kept models.config ({} without a serving target)."""
    target = load_target(root)
    if target is None or not Path(target.models_config).is_file():
        return {}
    return {
        model.name: dict(model.version_labels)
        for model in read_kept(target).model_config_list.config
        if model.version_labels
    }


def _entry(config: Any, model: str, target: ServingTarget, root: str | os.PathLike) -> Any:
    """The model's entry in ``config``, or a new one (base path as `serving-config` writes)."""
    from serving.config import ModelConfig

    for entry in config.model_config_list.config:
        if entry.name == model:
            return entry
    prefix = target.base_path.rstrip("/") if target.base_path else str(
        serving_root(root).absolute()
    )
    return ModelConfig(name=model, base_path=f"{prefix}/{model}", model_platform="tensorflow")


def _with_entry(config: Any, entry: Any) -> Any:
    """A copy of ``config`` with ``entry`` replacing (or added as) its model's entry."""
    from serving.config import ModelServerConfig

    copy = ModelServerConfig()
    copy.CopyFrom(config)
    entries = copy.model_config_list.config
    for index, existing in enumerate(entries):
        if existing.name == entry.name:
            entries[index].CopyFrom(entry)
            return copy
    entries.add().CopyFrom(entry)
    return copy


@contextlib.contextmanager
def _locked(root: str | os.PathLike) -> Iterator[None]:
    """One label move at a time per root (an OS lock on `ROOT/.promotion.lock`)."""
    import portalocker

    with open(Path(root) / LOCK_FILE, "a") as handle:
        portalocker.lock(handle, portalocker.LockFlags.EXCLUSIVE)
        try:
            yield
        finally:
            portalocker.unlock(handle)


# -- the canary check ------------------------------------------------------------------------


def check_warmup(client: Any, model: str, version: int, version_dir: Path) -> tuple[int, list[str]]:
    """Replay the version's warmup requests on the live server with model_spec.version set;
    returns (requests answered within the contract, problems). Every signature the contract
    asks of the export must have a request, answered by this version with every output."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from client import ModelServerError
    from components.common.serving_validation import (
        WARMUP_PATH,
        build_probes,
        check_response,
        read_prediction_logs,
    )
    from contracts import contract_for, read_sidecar

    path = version_dir / WARMUP_PATH
    if not path.is_file():
        return 0, [f"no warmup requests ({path}); versions pushed by `genpipe run` have them"]
    try:
        probes = {p.key: p for p in build_probes(contract_for(model), read_sidecar(version_dir))}
        logs = read_prediction_logs(str(path))
    except (OSError, KeyError, ValueError, tf.errors.OpError) as error:
        return 0, [f"cannot read the requests: {error}"]
    answered, problems, asked = 0, [], set()
    for log in logs:
        request = log.predict_log.request
        key = request.model_spec.signature_name or "serving_default"
        asked.add(key)
        if key not in probes:
            problems.append(f"{key}: not a signature the {model} contract asks of this export")
            continue
        inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
        try:
            answer = client.predict(model, inputs, signature=key, version=version,
                                    output_filter=list(request.output_filter))
        except ModelServerError as error:
            problems.append(f"{key}: {error}")
            continue
        if answer.version != version:
            problems.append(f"{key}: answered by version {answer.version}, not {version}")
            continue
        response = predict_pb2.PredictResponse()
        for name, value in answer.outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        found = check_response(probes[key], response)
        problems += [f"{key}: {problem}" for problem in found]
        answered += not found
    problems += [f"{key}: no warmup request" for key in sorted(set(probes) - asked)]
    return answered, problems


# -- moving a label --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a label move did: ``ok`` when the label is on the version now (moved, or it was
    there already), else it was refused and ``message`` says why."""

    ok: bool
    model: str
    label: str
    from_version: int | None
    to_version: int | None
    message: str
    execution_id: int | None = None  # the `genpipe.LabelMove` record


def _versions_on_disk(root: str | os.PathLike, model: str) -> list[int]:
    from serving.config import model_folders
    from serving.status import versions_on_disk

    names = [folder.name for folder in model_folders(serving_root(root))]
    if model not in names:
        raise ValueError(f"MODEL {model!r} has no pushed versions under {serving_root(root)}; "
                         f"allowed: {', '.join(names) or 'none (run `genpipe run` first)'}")
    return versions_on_disk(serving_root(root) / model)[0]


def _pick_version(
    action: str, version: int | None, labels: Mapping[str, int], complete: list[int],
    root: str | os.PathLike, model: str,
) -> int:
    """The version the action moves its label to: the one asked for, else its default."""
    flag = "--to" if action == "rollback" else "--version"
    if version is None:
        if action == "canary":
            if not complete:
                raise ValueError(f"{model} has no complete version on disk yet")
            version = complete[-1]
        elif action == "promote":
            version = labels.get(CANARY)
            if version is None:
                raise ValueError(f"{model} has no canary to promote; run `genpipe canary "
                                 f"{model}` first or give --version V")
        else:
            version = previous_stable(label_moves(root, model), labels.get(STABLE))
            if version is None:
                raise ValueError(f"{model} has no earlier stable version to roll back to "
                                 "(none recorded); give --to V")
    if version not in complete:
        raise ValueError(f"{flag} {version}: not a complete version of {model}; "
                         f"on disk: {', '.join(map(str, complete)) or 'none'}")
    return version


def move_label(
    root: str | os.PathLike,
    model: str,
    action: str,
    version: int | None = None,
    *,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    say: Say = print,
) -> Outcome:
    """Move the label of ``action`` (canary: `canary`; promote, rollback: `stable`) of
    ``model`` to ``version`` (canary: the latest pushed; promote: the canary; rollback: the
    previous good stable), as the module docstring describes. Bad input raises ValueError."""
    if action not in ACTIONS:
        raise ValueError(f"action {action!r} is unknown; allowed: {', '.join(ACTIONS)}")
    if wait_seconds <= 0:
        raise ValueError(f"--wait {wait_seconds:g}: must be > 0 seconds")
    from client import ModelServerError
    from serving.config import labelled_entry

    label = ACTIONS[action]
    target = require_target(root)
    complete = _versions_on_disk(root, model)
    with _locked(root):
        kept = read_kept(target)
        entry = _entry(kept, model, target, root)
        labels = dict(entry.version_labels)
        version = _pick_version(action, version, labels, complete, root, model)
        current = labels.get(label)
        if current == version:
            message = f"{model}: {label} is already version {version}; nothing to move"
            say(message)
            return Outcome(True, model, label, current, version, message)
        loading = _with_entry(kept, labelled_entry(entry, labels, also_serve=[version]))
        final = _with_entry(kept, labelled_entry(entry, {**labels, label: version}))
        problem = None
        # A reload may load a version (genpipe serve loads before answering): every call may
        # take as long as the wait for AVAILABLE.
        with target.client(timeout=wait_seconds) as client:
            try:
                client.reload_config(loading)
                say(f"{model} version {version}: loading on {target.server} "
                    f"(waiting up to {wait_seconds:g} s for AVAILABLE)")
                client.wait_until_available(model, version, timeout=wait_seconds)
                say(f"{model} version {version}: AVAILABLE")
                if action == "canary":
                    answered, problems = check_warmup(
                        client, model, version, serving_root(root) / model / str(version)
                    )
                    if problems:
                        problem = "warmup requests refused: " + "; ".join(problems)
                    else:
                        say(f"{model} version {version}: {answered} warmup request(s) answered "
                            "within the serving contract")
                if problem is None:
                    client.reload_config(final)
            except ModelServerError as error:
                problem = str(error)
            if problem is not None:
                with contextlib.suppress(ModelServerError):
                    client.reload_config(kept)  # unload the version again; labels as kept
        if problem is None:
            write_atomically(target.models_config, _models_config_text(root, final))
        moved = problem is None
        before = "none" if current is None else current
        message = (f"{label}: {before} -> {version}" if moved else
                   f"{label} not moved (stays {before}): {problem}")
        execution_id = record_move(
            root, model=model, label=label, action=action, from_version=current,
            to_version=version, server=target.server, moved=moved, message=message,
        )
        say(f"{model}: {message} (ML Metadata {EXECUTION_TYPE} #{execution_id})")
        return Outcome(moved, model, label, current, version, message, execution_id)


def canary_after_run(root: str | os.PathLike, summary: Any, say: Say = print) -> Outcome | None:
    """`genpipe run`'s last step: with a serving target for ``root``, canary the version the
    run's Pusher pushed (None: no target, or nothing pushed)."""
    from pipeline.stages import PUSHER

    if load_target(root) is None:
        return None
    try:
        pushed = summary.output(PUSHER, "pushed_model").properties
    except KeyError:
        return None
    if not pushed.get("pushed"):
        return None
    destination = str(pushed["pushed_destination"]).rstrip("/")
    model = os.path.basename(os.path.dirname(destination))
    return move_label(root, model, "canary", int(os.path.basename(destination)), say=say)
