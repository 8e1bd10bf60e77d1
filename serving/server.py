"""The model server: a model manager behind the gRPC and REST front ends."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from serving import config as config_lib
from serving import flags
from serving.admission import AdmissionGate
from serving.batching import BatchScheduler, read_batching_parameters
from serving.config import ModelServerConfig
from serving.grpc_service import build_grpc_server, registered_methods
from serving.manager import LoadOptions, ModelManager
from serving.metrics import ServingMetrics
from serving.rest import RestApi, RestServer
from serving.security import TlsConfig
from serving.warmup import replay_warmup

log = logging.getLogger("genpipe.serving")
MB = 1024 * 1024
DEFAULT_REST_API_TIMEOUT_MS = flags.REST_API_TIMEOUT_IN_MS  # its old name here


@dataclass
class ServerOptions:
    """Listening, safety and config-file options (how versions load: `LoadOptions`).

    `genpipe serve` leaves every field it was not given at these defaults.
    """

    host: str = flags.HOST
    port: int = flags.GRPC_PORT
    rest_api_port: int = flags.REST_API_PORT  # 0 disables REST
    rest_api_timeout_in_ms: int = flags.REST_API_TIMEOUT_IN_MS  # 0 or less: no timeout
    rest_api_num_threads: int = field(default_factory=flags.rest_api_num_threads)
    # Headers, and each read of the body, must arrive within it; a silent client is dropped.
    rest_api_client_timeout_seconds: float = flags.REST_API_CLIENT_TIMEOUT_SECONDS
    max_message_mb: int = flags.MAX_MESSAGE_MB
    tls: TlsConfig | None = None
    token: str | None = None
    metrics_path: str | None = None  # None: no Prometheus page
    workers: int = flags.GRPC_MAX_THREADS  # gRPC threads (--grpc_max_threads)
    # Requests each front end lets wait for a thread; more are refused (serving/admission.py).
    max_enqueued_requests: int = flags.MAX_ENQUEUED_REQUESTS
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()
    model_config_file: str | None = None  # re-read every model_config_file_poll_wait_seconds
    model_config_file_poll_wait_seconds: float = flags.MODEL_CONFIG_FILE_POLL_WAIT_SECONDS
    # Request batching (serving/batching.py) reads these two.
    enable_batching: bool = False
    batching_parameters_file: str | None = None  # a BatchingParameters text proto


class ModelServer:
    """Load models, then answer gRPC and REST until `stop`:

    server = ModelServer(build_manager(models_root="runs/serving"), ServerOptions(port=0))
    server.start()
    print(server.describe())  # the ports actually bound
    server.wait()
    """

    def __init__(self, manager: ModelManager, options: ServerOptions | None = None):
        self.manager = manager
        self.options = options or ServerOptions()
        self.metrics = ServingMetrics(manager)
        self.batching = self._batching()  # before any load: a bad file fails at once
        queued, admission = self.options.max_enqueued_requests, self.metrics.admission
        self.gates = {
            "grpc": AdmissionGate("grpc", self.options.workers, queued, admission),
            "rest": AdmissionGate("rest", self.options.rest_api_num_threads, queued, admission),
        }
        self._grpc = None
        self._rest: RestServer | None = None
        self._watcher: ConfigFileWatcher | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None

    def start(self) -> None:
        """Load the models present now, then open the ports."""
        options = self.options
        max_bytes = options.max_message_mb * MB
        self.manager.start()
        self._grpc, self.grpc_port = build_grpc_server(
            self.manager,
            self.metrics,
            host=options.host,
            port=options.port,
            max_message_bytes=max_bytes,
            tls=options.tls,
            token=options.token,
            gate=self.gates["grpc"],
            channel_arguments=options.grpc_channel_arguments,
            batching=self.batching,
        )
        if options.rest_api_port:
            self._rest = RestServer(
                RestApi(self.manager, self.metrics, options.rest_api_timeout_in_ms, self.batching),
                self.metrics,
                host=options.host,
                port=options.rest_api_port,
                max_body_bytes=max_bytes,
                token=options.token,
                ssl_context=options.tls.ssl_context() if options.tls else None,
                metrics_path=options.metrics_path,
                gate=self.gates["rest"],
                client_timeout=options.rest_api_client_timeout_seconds,
            )
            self.rest_port = self._rest.port
        self._grpc.start()
        if self._rest is not None:
            self._rest.start()
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._watcher = ConfigFileWatcher(
                self.manager, options.model_config_file, options.model_config_file_poll_wait_seconds
            )
            self._watcher.start()

    def _batching(self) -> BatchScheduler | None:
        """The request batcher of --enable_batching (None: requests run one by one)."""
        if not self.options.enable_batching:
            if self.options.batching_parameters_file:
                log.warning("--batching_parameters_file is read only with --enable_batching")
            return None
        parameters = read_batching_parameters(self.options.batching_parameters_file)
        log.info("request batching on: %s", parameters)
        return BatchScheduler(parameters, self.metrics.batching)

    def describe(self) -> str:
        """One line: where the server listens and what it serves."""
        host = self.options.host
        scheme = "https" if self.options.tls else "http"
        parts = [f"gRPC {host}:{self.grpc_port}" + (" (TLS)" if self.options.tls else "")]
        if self.rest_port:
            parts.append(f"REST {scheme}://{host}:{self.rest_port}/v1/models/")
            if self.options.metrics_path:
                parts.append(
                    f"metrics {scheme}://{host}:{self.rest_port}{self.options.metrics_path}"
                )
        served = []
        for name in self.manager.model_names():
            live = [
                s.version for s in _safe_status(self.manager, name) if s.state_name == "AVAILABLE"
            ]
            served.append(
                f"{name} v{','.join(map(str, sorted(live)))}" if live else f"{name} (none)"
            )
        auth = "; bearer token required" if self.options.token else ""
        return (
            f"genpipe model server: {', '.join(parts)}; models: {', '.join(served) or 'none'}{auth}"
        )

    def endpoints(self) -> dict[str, list[tuple[str, str]]]:
        """What the started server answers, as registered: gRPC ("grpc", full method name)
        and REST (method, URL template) pairs, by protocol."""
        grpc_methods = [("grpc", method) for method in registered_methods(self._grpc)]
        return {"grpc": grpc_methods, "rest": self._rest.endpoints() if self._rest else []}

    def wait(self) -> None:
        """Block until the gRPC server stops."""
        if self._grpc is not None:
            self._grpc.wait_for_termination()

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, finish in-flight ones (up to ``grace`` s), unload models."""
        if self._watcher is not None:
            self._watcher.stop()
        if self._rest is not None:
            self._rest.stop(grace)
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        self.manager.stop()

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class ConfigFileWatcher:
    """Re-read a `--model_config_file` every ``seconds`` and reload the manager live when its
    contents changed (`--model_config_file_poll_wait_seconds`). A file that does not parse or
    is refused is logged and the current config keeps serving, as in TF Serving."""

    def __init__(self, manager: ModelManager, path: str, seconds: float):
        self.manager = manager
        self.path = path
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: ModelServerConfig | None = None
        self._last_error = ""

    def start(self) -> None:
        self._last = self._read()
        self._thread = threading.Thread(target=self._run, name="config-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _read(self) -> ModelServerConfig | None:
        try:
            return config_lib.read_model_config_file(self.path)
        except Exception as error:  # noqa: BLE001 - a bad edit must not stop the server
            self._report(error)
            return None

    def _report(self, error: Exception) -> None:
        message = getattr(error, "message", None) or str(error)
        if message != self._last_error:  # once per distinct problem, not every poll
            log.error("model config %s not applied: %s", self.path, message)
            self._last_error = message

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            config = self._read()
            if config is None or config == self._last:
                continue
            try:
                self.manager.reload_config(config)
            except Exception as error:  # noqa: BLE001 - e.g. a label on an unavailable version
                self._report(error)
                continue
            self._last, self._last_error = config, ""
            names = ", ".join(self.manager.model_names())
            log.info("model config %s reloaded: %s", self.path, names)


def _safe_status(manager: ModelManager, name: str):
    try:
        return manager.model_status(name)
    except Exception:  # noqa: BLE001 - a model without versions yet
        return []


def build_manager(
    *,
    models_root: str | None = None,
    config: ModelServerConfig | None = None,
    poll_wait_seconds: float = flags.FILE_SYSTEM_POLL_WAIT_SECONDS,
    allow_labels_for_unavailable: bool = False,
    load_options: LoadOptions | None = None,
) -> ModelManager:
    """A manager that replays warmup requests on every load (unless the options disable it)."""
    load_options = load_options or LoadOptions()
    return ModelManager(
        config,
        models_root=models_root,
        poll_wait_seconds=poll_wait_seconds,
        allow_labels_for_unavailable=allow_labels_for_unavailable,
        on_load=replay_warmup if load_options.enable_model_warmup else None,
        load_options=load_options,
    )
