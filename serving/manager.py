"""The model manager: which versions exist, load and unload them, route requests to them.

It follows TF Serving's file-system source and availability-preserving policy:
- every poll, each model's base path is scanned; a version folder counts once its
  `saved_model.pb` exists (pushers write it last, so a half-written version is never loaded);
- the model's version policy picks the aspired versions among those (latest N, all, specific);
- a version that fails to load ends in state END with the error; it is retried up to
  `LoadOptions.max_num_load_retries` times, one poll cycle at least `load_retry_interval_micros`
  after the last attempt, and again whenever its `saved_model.pb` changes; the versions already
  serving keep serving;
- a version no longer aspired unloads once an aspired version is available, and only after the
  requests holding it finish (reference counting); unloading closes its session;
- a serving version whose folder vanishes or becomes unreadable, or whose saved_model.pb
  changes, keeps serving the copy in memory (when no other version is ready to take over); the
  problem is logged and shown in GetModelStatus (AVAILABLE, code OK, an error_message);
- version labels map names to versions; a label may only point at an available version unless
  the server allows labels for unavailable versions.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from serving import config as config_lib
from serving import flags, names
from serving.errors import (
    ServingError,
    clean_tf_message,
    code_from_number,
    failed_precondition,
    invalid_argument,
    not_found,
)
from serving.servable import Servable, load_servable, saved_model_file

log = logging.getLogger("genpipe.serving")

State = get_model_status_pb2.ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = (
    State.START,
    State.LOADING,
    State.AVAILABLE,
    State.UNLOADING,
    State.END,
)


@dataclass(frozen=True)
class LoadOptions:
    """How versions load; the defaults are tensorflow_model_server's (its flags of these names)."""

    saved_model_tags: tuple[str, ...] = flags.SAVED_MODEL_TAGS  # the MetaGraphDef's exact tags
    intra_op_threads: int = 0  # 0: TensorFlow picks
    inter_op_threads: int = 0
    enable_model_warmup: bool = flags.ENABLE_MODEL_WARMUP
    max_num_load_retries: int = flags.MAX_NUM_LOAD_RETRIES  # after the first failure
    load_retry_interval_micros: int = flags.LOAD_RETRY_INTERVAL_MICROS  # negative: no wait


class ManagerListener(Protocol):
    """What the manager reports as versions come and go and run (the server's metrics)."""

    def version_loaded(
        self, name: str, version: int, path: str, seconds: float, error: ServingError | None
    ) -> None: ...

    def version_unloaded(self, name: str, version: int) -> None: ...

    def version_ran(
        self, servable: Servable, signature: str, seconds: float, outputs: Mapping[str, np.ndarray]
    ) -> None: ...


@dataclass(frozen=True)
class VersionStatus:
    """What GetModelStatus reports for one version."""

    version: int
    state: int
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""

    @property
    def state_name(self) -> str:
        return State.Name(self.state)


class _Version:
    """Bookkeeping of one model version (guarded by the manager's lock)."""

    def __init__(self, name: str, version: int, path: str):
        self.name = name
        self.version = version
        self.path = path
        self.state = START
        self.error: ServingError | None = None
        self.servable: Servable | None = None
        self.in_flight = 0
        self.failed_fingerprint: tuple | None = None
        self.retries = 0  # load retries since the files last changed
        self.retry_at = 0.0  # time.monotonic() of the next allowed retry
        self.loaded_fingerprint: tuple | None = None  # saved_model.pb when it loaded
        # Why a serving version's files no longer match what it serves (reported with OK).
        self.warning = ""

    def status(self) -> VersionStatus:
        if self.error is None:
            if self.warning and self.state == AVAILABLE:
                return VersionStatus(self.version, self.state, error_message=self.warning)
            return VersionStatus(self.version, self.state)
        return VersionStatus(self.version, self.state, self.error.code, self.error.message)


class ModelManager:
    """Loads the configured models' versions from disk and hands them out to requests.

    Give either ``config`` (a `ModelServerConfig`) or ``models_root`` (every model folder under
    it, rescanned each poll so newly pushed models appear). ``on_load`` runs on each freshly
    loaded servable before it becomes available (warmup); if it raises, the load fails.
    ``loader`` (name, version, folder) -> Servable replaces `load_servable` with
    ``load_options``' tags and threads; ``listener`` hears loads, unloads and runs.
    """

    def __init__(
        self,
        config: config_lib.ModelServerConfig | None = None,
        *,
        models_root: str | None = None,
        poll_wait_seconds: float = flags.FILE_SYSTEM_POLL_WAIT_SECONDS,
        allow_labels_for_unavailable: bool = False,
        on_load: Callable[[Servable], None] | None = None,
        loader: Callable[[str, int, str], Servable] | None = None,
        load_options: LoadOptions | None = None,
    ):
        if (config is None) == (models_root is None):
            raise ValueError("give exactly one of config or models_root")
        if config is not None:
            config_lib.validate_config(config)
        self.poll_wait_seconds = poll_wait_seconds
        self.allow_labels_for_unavailable = allow_labels_for_unavailable
        self._models_root = models_root
        self._config = config if config is not None else config_lib.config_for_root(models_root)
        self._on_load = on_load
        self.load_options = options = load_options or LoadOptions()
        self._loader = loader or functools.partial(
            load_servable,
            intra_op_threads=options.intra_op_threads,
            inter_op_threads=options.inter_op_threads,
            tags=options.saved_model_tags,
        )
        self.listener: ManagerListener | None = None
        self._lock = threading.Lock()  # versions, labels, config
        self._cycle_lock = threading.Lock()  # one poll cycle or reload at a time
        self._versions: dict[str, dict[int, _Version]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._missing_paths: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load what is on disk now, install the labels, then keep polling in the background."""
        with self._cycle_lock:
            self._cycle()
            labels = self._checked_labels(self._config)
            with self._lock:
                self._labels = labels
        if self.poll_wait_seconds > 0:
            self._thread = threading.Thread(
                target=self._poll_forever, name="model-poller", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop polling and unload every loaded version (each after its in-flight requests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        closing = []
        with self._lock:
            for versions in self._versions.values():
                for entry in versions.values():
                    if entry.state == AVAILABLE:
                        entry.state = UNLOADING
                    if entry.state == UNLOADING and entry.in_flight == 0:
                        closing.append(self._finish_unload(entry))
        _close(closing)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a failed poll must not stop future polls
                log.exception("polling the model base paths failed")

    def poll_once(self) -> None:
        """One scan of every base path: load new versions, unload retired ones."""
        with self._cycle_lock:
            self._cycle()

    def reload_config(self, config: config_lib.ModelServerConfig) -> None:
        """Swap in a new `model_config_list` live (HandleReloadConfigRequest).

        New models load before this returns; removed models unload after their in-flight
        requests. A label on a version that is not available is FAILED_PRECONDITION.
        """
        config_lib.validate_config(config)
        with self._cycle_lock:
            with self._lock:
                self._config = config
                self._models_root = None  # an explicit config replaces the scanned root
            self._cycle()
            labels = self._checked_labels(config)
            with self._lock:
                self._labels = labels

    # -- the poll cycle --------------------------------------------------------------------

    def _cycle(self) -> None:
        if self._models_root is not None:
            scanned = config_lib.config_for_root(self._models_root)
            with self._lock:
                self._config = scanned
        with self._lock:
            models = list(self._config.model_config_list.config)
        configured = {model.name for model in models}
        for model in models:
            ready = self._ready_versions(model.base_path)
            self._check_serving_files(model, ready)
            with self._lock:
                serving = bool(self._available(model.name))
            if not ready and serving:
                continue  # every version folder vanished: keep serving what is loaded
            aspired = config_lib.aspired_versions(model, ready)
            for version in sorted(aspired, reverse=True):
                self._maybe_load(model.name, version, ready[version])
            self._retire(model.name, aspired)
        with self._lock:
            removed = [name for name in self._versions if name not in configured]
        for name in removed:
            self._retire(name, set())

    def _ready_versions(self, base_path: str) -> dict[int, str]:
        """Version number -> folder, for version folders whose saved_model.pb exists (an
        unreadable folder counts as absent)."""
        try:
            entries = tf.io.gfile.listdir(base_path)
        except tf.errors.OpError as error:  # missing, or not readable
            if base_path not in self._missing_paths:  # say it once, not every poll
                log.warning("base path %s cannot be listed (%s); polling it", base_path,
                            type(error).__name__)  # fmt: skip
                self._missing_paths.add(base_path)
            return {}
        self._missing_paths.discard(base_path)
        ready = {}
        for name in entries:
            name = name.rstrip("/")
            if not config_lib.VERSION_DIR.match(name):
                continue
            folder = posixpath.join(base_path, name)
            try:
                if tf.io.gfile.isdir(folder) and saved_model_file(folder) is not None:
                    ready[int(name)] = folder
            except tf.errors.OpError:
                continue  # unreadable: not a version the server can load
        return ready

    def _check_serving_files(self, model: config_lib.ModelConfig, ready: dict[int, str]) -> None:
        """Note (log and GetModelStatus) serving versions whose files vanished or changed on
        disk: the loaded copy keeps serving, as TF Serving never reloads a version in place."""
        with self._lock:
            serving = [
                entry
                for entry in self._versions.get(model.name, {}).values()
                if entry.state == AVAILABLE
            ]
        for entry in serving:
            if entry.version not in ready:
                warning = (
                    f"version folder {entry.path} is gone or unreadable; the copy loaded in "
                    "memory keeps serving until another version is available"
                )
            elif self._fingerprint(entry.path) != entry.loaded_fingerprint:
                warning = (
                    f"the saved_model.pb of {entry.path} changed on disk after it loaded; the "
                    "loaded copy keeps serving (push new files as a new version number)"
                )
            else:
                warning = ""
            if warning and warning != entry.warning:
                log.error("%s version %d: %s", entry.name, entry.version, warning)
            entry.warning = warning

    @staticmethod
    def _fingerprint(folder: str) -> tuple | None:
        """(file, mtime, size) of a version's saved_model.pb; None when it cannot be read."""
        try:
            path = saved_model_file(folder)
            if path is None:
                return None
            stat = tf.io.gfile.stat(path)
        except tf.errors.OpError:
            return None
        return (path, stat.mtime_nsec, stat.length)

    def _maybe_load(self, name: str, version: int, folder: str) -> None:
        with self._lock:
            entry = self._versions.setdefault(name, {}).get(version)
            if entry is None:
                entry = self._versions[name][version] = _Version(name, version, folder)
            state, failed, fingerprint = entry.state, entry.error, entry.failed_fingerprint
        if state in (LOADING, AVAILABLE, UNLOADING):
            return
        if state == END and failed is not None:
            if fingerprint != self._fingerprint(folder):
                entry.retries = 0  # new files: a fresh round of attempts
            elif not self._retry_due(entry):
                return  # the same broken files: wait for the retry interval, or give up
        with self._lock:
            entry.state, entry.error, entry.path = LOADING, None, folder
        log.info("loading %s version %d from %s", name, version, folder)
        fingerprint = self._fingerprint(folder)  # before reading: a later change is noticed
        servable, failure = None, None
        start = time.perf_counter()
        try:
            servable = self._loader(name, version, folder)
            if self._on_load is not None:
                self._on_load(servable)
        except Exception as error:  # noqa: BLE001 - any load failure is reported, not raised
            _close([servable])  # loaded, but its warmup failed
            failure = error if isinstance(error, ServingError) else _load_error(error)
        if self.listener is not None:
            seconds = time.perf_counter() - start
            self.listener.version_loaded(name, version, folder, seconds, failure)
        if failure is not None:
            log.error("loading %s version %d failed: %s", name, version, failure.message)
            with self._lock:
                entry.state, entry.error = END, failure
                entry.failed_fingerprint = self._fingerprint(folder)
                wait = max(self.load_options.load_retry_interval_micros, 0) / 1e6
                entry.retry_at = time.monotonic() + wait
            return
        servable.observer = self._observe_run  # after warmup: only requests are measured
        with self._lock:
            entry.servable, entry.state, entry.retries = servable, AVAILABLE, 0
            entry.loaded_fingerprint, entry.warning = fingerprint, ""
        log.info("%s version %d is available", name, version)

    def _retry_due(self, entry: _Version) -> bool:
        """Whether a failed version may be loaded again now (counts the retry)."""
        if entry.retries >= self.load_options.max_num_load_retries:
            return False
        if time.monotonic() < entry.retry_at:
            return False
        entry.retries += 1
        log.info(
            "retrying the load of %s version %d (%d of %d)",
            entry.name,
            entry.version,
            entry.retries,
            self.load_options.max_num_load_retries,
        )
        return True

    def _observe_run(self, servable: Servable, signature: str, seconds: float, outputs) -> None:
        if self.listener is not None:
            self.listener.version_ran(servable, signature, seconds, outputs)

    def _retire(self, name: str, aspired: set[int]) -> None:
        """Unload available versions outside ``aspired`` once an aspired one is available."""
        closing = []
        with self._lock:
            versions = self._versions.get(name, {})
            if aspired and not any(
                versions[v].state == AVAILABLE for v in aspired if v in versions
            ):
                return  # keep serving what we have until a wanted version is up
            for entry in versions.values():
                if entry.state == AVAILABLE and entry.version not in aspired:
                    entry.state = UNLOADING
                    log.info("unloading %s version %d", name, entry.version)
                    if entry.in_flight == 0:
                        closing.append(self._finish_unload(entry))
        _close(closing)

    def _finish_unload(self, entry: _Version) -> Servable | None:
        """Mark an unloading version gone (lock held); returns its servable for `_close`."""
        servable, entry.servable = entry.servable, None
        entry.state = END
        log.info("%s version %d unloaded", entry.name, entry.version)
        if self.listener is not None:
            self.listener.version_unloaded(entry.name, entry.version)
        return servable

    def _checked_labels(self, config: config_lib.ModelServerConfig) -> dict[str, dict[str, int]]:
        labels: dict[str, dict[str, int]] = {}
        with self._lock:
            for model in config.model_config_list.config:
                for label, version in model.version_labels.items():
                    entry = self._versions.get(model.name, {}).get(version)
                    available = entry is not None and entry.state == AVAILABLE
                    if not available and not self.allow_labels_for_unavailable:
                        raise failed_precondition(
                            f"Request to assign label {label!r} to version {version} of model "
                            f"{model.name}, which is not currently available for inference"
                        )
                    labels.setdefault(model.name, {})[label] = version
        return labels

    # -- requests --------------------------------------------------------------------------

    @contextmanager
    def servable(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[Servable]:
        """Hold a version for the duration of a request (it cannot unload meanwhile)."""
        with self._lock:
            entry = self._resolve(name, version, label)
            entry.in_flight += 1
            servable = entry.servable
        closing = None
        try:
            yield servable
        finally:
            with self._lock:
                entry.in_flight -= 1
                if entry.in_flight == 0 and entry.state == UNLOADING:
                    closing = self._finish_unload(entry)
            _close([closing])

    def _resolve(self, name: str, version: int | None, label: str | None) -> _Version:
        names.check_spec(name, version, label)
        if version is not None and label:
            raise invalid_argument(
                f"Both model version ({version}) and model version label ({label}) cannot be "
                "supplied."
            )
        versions = self._versions.get(name, {})
        if label:
            known = self._labels.get(name, {})
            if label not in known:
                raise invalid_argument(
                    f"Unrecognized servable version label: {label}. "
                    f"Labels of model {name}: {sorted(known) or 'none'}"
                )
            version = known[label]
        if version is not None:
            entry = versions.get(version)
            if entry is None or entry.state != AVAILABLE:
                raise not_found(
                    f"Servable not found for request: Specific({name}, {version}). "
                    f"Available versions: {self._available(name) or 'none'}"
                )
            return entry
        available = [e for e in versions.values() if e.state == AVAILABLE]
        if not available:
            raise not_found(
                f"Servable not found for request: Latest({name}). "
                f"Models with an available version: {self._available_models() or 'none'}"
            )
        return max(available, key=lambda e: e.version)

    def _available(self, name: str) -> list[int]:
        versions = self._versions.get(name, {})
        return sorted(v for v, e in versions.items() if e.state == AVAILABLE)

    def _available_models(self) -> list[str]:
        return sorted(name for name in self._versions if self._available(name))

    # -- status ----------------------------------------------------------------------------

    def model_status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """GetModelStatus: one version, or every version the manager has seen (newest first)."""
        names.check_spec(name, version, label)
        with self._lock:
            versions = self._versions.get(name, {})
            if label:
                known = self._labels.get(name, {})
                if label not in known:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = known[label]
            if version is not None:
                if version not in versions:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [versions[version].status()]
            if not versions:
                raise not_found(f"Could not find any versions of model {name}")
            return [versions[v].status() for v in sorted(versions, reverse=True)]

    def model_names(self) -> list[str]:
        """Names of the models in the current config."""
        with self._lock:
            return [model.name for model in self._config.model_config_list.config]

    def labels(self, name: str) -> dict[str, int]:
        with self._lock:
            return dict(self._labels.get(name, {}))

    def snapshot(self) -> list[tuple[str, int, int]]:
        """(model, version, state) of every version the manager has seen."""
        with self._lock:
            return [
                (name, v, entry.state)
                for name, versions in sorted(self._versions.items())
                for v, entry in sorted(versions.items())
            ]


def _close(servables: list[Servable | None]) -> None:
    """Close unloaded versions' sessions outside the manager's lock (freeing a large model takes
    a while, and requests to other versions must not wait for it)."""
    for servable in servables:
        if servable is not None:
            servable.close()


def _load_error(error: Exception) -> ServingError:
    """How a load failure is reported in GetModelStatus."""
    if isinstance(error, tf.errors.OpError):
        return ServingError(code_from_number(error.error_code), clean_tf_message(error.message))
    return ServingError(grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}")
