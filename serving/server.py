"""The model server: a model manager behind the gRPC and REST front ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from serving.config import ModelServerConfig
from serving.grpc_service import build_grpc_server
from serving.manager import ModelManager
from serving.metrics import ServingMetrics
from serving.rest import RestApi, RestServer
from serving.security import TlsConfig
from serving.warmup import replay_warmup

log = logging.getLogger("genpipe.serving")
MB = 1024 * 1024
DEFAULT_REST_API_TIMEOUT_MS = 30_000  # tensorflow_model_server's --rest_api_timeout_in_ms


@dataclass
class ServerOptions:
    """Listening and safety options (the model side lives in the manager)."""

    host: str = "127.0.0.1"
    port: int = 8500
    rest_api_port: int = 8501  # 0 disables REST
    rest_api_timeout_in_ms: int = DEFAULT_REST_API_TIMEOUT_MS  # 0 or less: no timeout
    max_message_mb: int = 64
    tls: TlsConfig | None = None
    token: str | None = None
    metrics_path: str | None = None  # None: no Prometheus page
    workers: int = 16


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
        self._grpc = None
        self._rest: RestServer | None = None
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
            workers=options.workers,
        )
        if options.rest_api_port:
            self._rest = RestServer(
                RestApi(self.manager, self.metrics, options.rest_api_timeout_in_ms),
                self.metrics,
                host=options.host,
                port=options.rest_api_port,
                max_body_bytes=max_bytes,
                token=options.token,
                ssl_context=options.tls.ssl_context() if options.tls else None,
                metrics_path=options.metrics_path,
                workers=options.workers,
            )
            self.rest_port = self._rest.port
        self._grpc.start()
        if self._rest is not None:
            self._rest.start()

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

    def wait(self) -> None:
        """Block until the gRPC server stops."""
        if self._grpc is not None:
            self._grpc.wait_for_termination()

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, finish in-flight ones (up to ``grace`` s), unload models."""
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


def _safe_status(manager: ModelManager, name: str):
    try:
        return manager.model_status(name)
    except Exception:  # noqa: BLE001 - a model without versions yet
        return []


def build_manager(
    *,
    models_root: str | None = None,
    config: ModelServerConfig | None = None,
    poll_wait_seconds: float = 1.0,
    allow_labels_for_unavailable: bool = False,
) -> ModelManager:
    """A manager that replays warmup requests on every load."""
    return ModelManager(
        config,
        models_root=models_root,
        poll_wait_seconds=poll_wait_seconds,
        allow_labels_for_unavailable=allow_labels_for_unavailable,
        on_load=replay_warmup,
    )
