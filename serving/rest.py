"""REST front end on TF Serving's URLs, served by Tornado.

- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]``           model status
- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata``  signature defs
- ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict``   row or columnar Predict
- the Prometheus page at the monitoring config's path (when enabled)

Errors are ``{"error": "..."}`` with the HTTP status TF Serving maps each code to.
`RestApi` is the protocol logic (method, path, body -> status, body); `RestServer` runs it in
Tornado on its own thread, handing each request to a worker pool.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from concurrent import futures
from urllib.parse import unquote

import grpc
import tornado.httpserver
import tornado.netutil
import tornado.web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving import names, request_limits, rest_json
from serving import predict as core
from serving.admission import RETRY_AFTER_SECONDS, AdmissionGate
from serving.batching import BatchScheduler
from serving.errors import ServingError, http_status, invalid_argument
from serving.manager import ModelManager
from serving.metrics import ServingMetrics
from serving.security import bearer_matches
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger("genpipe.serving")
PROTOCOL = "rest"
JSON = "application/json"
DRAIN_FACTOR = 4

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_MODEL_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)

# Every URL `RestApi` answers (the two regexes above parse them), as (method, template);
# `RestServer.endpoints` adds the metrics page.
ENDPOINTS = tuple(
    (method, f"/v1/models/{{name}}{where}{suffix}")
    for method, suffixes in (("GET", ("", "/metadata")), ("POST", (":predict", ":classify",
                                                                   ":regress")))
    for suffix in suffixes
    for where in ("", "/versions/{version}", "/labels/{label}")
)  # fmt: skip


def _error_body(error: ServingError) -> bytes:
    return rest_json.dumps({"error": error.message})


class RestApi:
    """TF Serving's REST API over a model manager (no HTTP server here).

    A predict run stops after ``timeout_ms`` (0 or less: never) and answers DEADLINE_EXCEEDED,
    like tensorflow_model_server's ``--rest_api_timeout_in_ms``.
    """

    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics,
        timeout_ms: int = 0,
        batching: BatchScheduler | None = None,
    ):
        self.manager = manager
        self.metrics = metrics
        self.timeout_ms = timeout_ms
        self.batching = batching  # None: each request runs by itself

    def _deadline(self) -> float | None:
        if self.timeout_ms <= 0:
            return None
        return time.monotonic() + self.timeout_ms / 1000

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """Answer one request: (HTTP status, JSON body)."""
        try:
            return 200, self._dispatch(method, path, body)
        except ServingError as error:
            return error.http_status, _error_body(error)
        except Exception as error:  # noqa: BLE001 - report as INTERNAL, like the gRPC side
            log.exception("REST %s %s failed", method, path)
            failure = ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
            return failure.http_status, _error_body(failure)

    def _dispatch(self, method: str, path: str, body: bytes) -> bytes:
        if method == "POST" and (match := _PREDICT_PATH.fullmatch(path)):
            name, version, label, verb = match.groups()
            spec = core.Spec(unquote(name), _version(version), _label(label))
            if verb.lower() != "predict":
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f":{verb.lower()} is not implemented by genpipe's model server; use :predict "
                    "with a signature_name (GET .../metadata lists them)",
                )
            return self._predict(spec, body)
        if method == "GET" and (match := _MODEL_PATH.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise invalid_argument("Missing model name in request.")
            spec = core.Spec(unquote(name), _version(version), _label(label))
            return self._metadata(spec) if metadata else self._status(spec)
        raise invalid_argument(
            f"Malformed request: {method} {path}. Use GET /v1/models/NAME[/versions/N|/labels/L]"
            "[/metadata] or POST /v1/models/NAME[/versions/N|/labels/L]:predict"
        )

    def _predict(self, spec: core.Spec, body: bytes) -> bytes:
        deadline = self._deadline()
        with self.metrics.track(PROTOCOL, "Predict") as record:
            record.model = spec.name
            document = rest_json.parse_body(body)
            signature_name = rest_json.signature_name(document) or DEFAULT_SIGNATURE
            record.signature = signature_name
            with self.manager.servable(spec.name, spec.version, spec.label) as servable:
                record.version = str(servable.version)
                if signature_name not in servable.signature_names:
                    raise invalid_argument(
                        f'Serving signature name: "{signature_name}" not found in signature def. '
                        f"Signatures: {servable.signature_names}"
                    )
                infos = servable.signature_defs[signature_name].inputs
                limits = request_limits.current()
                inputs, fmt = rest_json.inputs_from_document(document, infos, limits)
                shapes = {name: array.shape for name, array in inputs.items()}
                request_limits.check_batch(servable, shapes, limits)
                request_limits.check_images(servable, signature_name, inputs)
                outputs = core.run_signature(
                    servable, signature_name, inputs, deadline=deadline, batching=self.batching
                )
            return rest_json.dumps(rest_json.outputs_to_document(outputs, fmt))

    def _status(self, spec: core.Spec) -> bytes:
        with self.metrics.track(PROTOCOL, "GetModelStatus") as record:
            record.model = spec.name
            request = get_model_status_pb2.GetModelStatusRequest()
            _fill_spec(request.model_spec, spec)
            response = core.model_status(self.manager, request)
            return rest_json.dumps(
                json_format.MessageToDict(response, including_default_value_fields=True)
            )

    def _metadata(self, spec: core.Spec) -> bytes:
        with self.metrics.track(PROTOCOL, "GetModelMetadata") as record:
            record.model = spec.name
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=[core.SIGNATURE_DEF_FIELD]
            )
            _fill_spec(request.model_spec, spec)
            response = core.model_metadata(self.manager, request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata[core.SIGNATURE_DEF_FIELD].Unpack(signature_map)
            options = {"including_default_value_fields": True, "preserving_proto_field_name": True}
            document = {
                "model_spec": json_format.MessageToDict(response.model_spec, **options),
                "metadata": {
                    core.SIGNATURE_DEF_FIELD: json_format.MessageToDict(signature_map, **options)
                },
            }
            return rest_json.dumps(document)


def _version(text: str | None) -> int | None:
    return names.parse_version(text) if text else None


def _label(text: str | None) -> str | None:
    return unquote(text) if text else None


def _fill_spec(target, spec: core.Spec) -> None:
    target.name = spec.name
    if spec.version is not None:
        target.version.value = spec.version
    if spec.label:
        target.version_label = spec.label


# -- Tornado -----------------------------------------------------------------------------------


class _Base(tornado.web.RequestHandler):
    """Auth, body-size limit and JSON errors shared by every handler."""

    def initialize(self, server: RestServer) -> None:
        self.server = server

    def prepare(self) -> None:
        self.chunks: list[bytes] = []
        token = self.server.token
        if token and not bearer_matches(self.request.headers.get("Authorization"), token):
            self.set_header("WWW-Authenticate", 'Bearer realm="genpipe"')
            self._reply(
                http_status(grpc.StatusCode.UNAUTHENTICATED),
                rest_json.dumps(
                    {"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"}
                ),
            )
            return
        limit = self.server.max_body_bytes
        declared = self.request.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            message = (
                f"request body of {int(declared)} bytes exceeds the server's limit of {limit} "
                "bytes (--max_message_mb)"
            )
            # Read and drop a moderately oversized body so the client, still sending it, gets
            # the 413 instead of a reset connection; far larger bodies just close it.
            self.request.connection.set_max_body_size(DRAIN_FACTOR * limit)
            self._reply(413, rest_json.dumps({"error": message}))
            return
        self.request.connection.set_max_body_size(limit)

    def data_received(self, chunk: bytes) -> None:
        if not self._finished:
            self.chunks.append(chunk)

    def _reply(self, status: int, body: bytes, content_type: str = JSON) -> None:
        self.set_status(status)
        self.set_header("Content-Type", content_type)
        self.finish(body)

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", JSON)
        self.finish(rest_json.dumps({"error": self._reason}))


@tornado.web.stream_request_body
class _ApiHandler(_Base):
    """Every /v1/ request, whatever the method (unknown ones are 'Malformed request')."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

    async def _serve(self) -> None:
        body = b"".join(self.chunks)
        loop = asyncio.get_running_loop()
        gate = self.server.gate
        try:
            gate.admit()  # on the event loop: a refusal never waits behind the queue
        except ServingError as error:
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            self._reply(error.http_status, _error_body(error))
            return
        try:
            status, payload = await loop.run_in_executor(
                self.server.executor,
                self.server.api.handle,
                self.request.method,
                self.request.path,
                body,
            )
        finally:
            gate.leave()
        self._reply(status, payload)

    get = post = put = delete = patch = options = _serve


@tornado.web.stream_request_body
class _MetricsHandler(_Base):
    def get(self) -> None:
        page, content_type = self.server.metrics.render()
        self._reply(200, page, content_type)


@tornado.web.stream_request_body
class _NotFoundHandler(_Base):
    def _missing(self) -> None:
        self._reply(
            404,
            rest_json.dumps(
                {"error": f"no route for {self.request.path}: the REST API lives under /v1/models/"}
            ),
        )

    get = post = put = delete = patch = _missing


class RestServer:
    """Tornado HTTP(S) server for `RestApi` on a background thread with its own event loop."""

    def __init__(
        self,
        api: RestApi,
        metrics: ServingMetrics,
        *,
        host: str,
        port: int,
        max_body_bytes: int,
        gate: AdmissionGate,
        token: str | None = None,
        ssl_context=None,
        metrics_path: str | None = None,
        client_timeout: float | None = None,
    ):
        """``gate`` bounds the requests held at once; its threads size the worker pool."""
        self.api = api
        self.client_timeout = client_timeout  # None: Tornado's (an hour for headers, no body)
        self.metrics = metrics
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.metrics_path = metrics_path
        self.gate = gate
        self.executor = futures.ThreadPoolExecutor(
            max_workers=self.gate.threads, thread_name_prefix="rest"
        )
        routes: list = []
        if metrics_path:
            routes.append((re.escape(metrics_path), _MetricsHandler, {"server": self}))
        routes.append((r"(?i)/v1/.*", _ApiHandler, {"server": self}))
        self._app = tornado.web.Application(
            routes,
            default_handler_class=_NotFoundHandler,
            default_handler_args={"server": self},
            log_function=lambda handler: None,
        )
        self._sockets = tornado.netutil.bind_sockets(port, address=host)
        self.port = self._sockets[0].getsockname()[1]
        self._ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def endpoints(self) -> list[tuple[str, str]]:
        """(method, URL template) of everything this server answers besides 404s."""
        page = [("GET", self.metrics_path)] if self.metrics_path else []
        return page + list(ENDPOINTS)

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="rest", daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._http = tornado.httpserver.HTTPServer(
            self._app,
            ssl_options=self._ssl_context,
            max_body_size=self.max_body_bytes,
            xheaders=False,
            idle_connection_timeout=self.client_timeout,
            body_timeout=self.client_timeout,
        )
        self._http.add_sockets(self._sockets)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()
        self._loop.close()

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s), then close."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._http.stop)
        deadline = time.monotonic() + grace
        while self.gate.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)

        async def close() -> None:
            await self._http.close_all_connections()
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(close(), self._loop)
        self._thread.join(timeout=grace + 1)
        self.executor.shutdown(wait=False, cancel_futures=True)
