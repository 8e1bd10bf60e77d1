"""gRPC front end: `tensorflow.serving.PredictionService` and `tensorflow.serving.ModelService`
on the official generated servicers, genpipe's `genpipe.serving.GenerationService`
(protos/generation.py), optional bearer-token auth and TLS."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from protos.generation import add_generation_service
from serving import predict as core
from serving.admission import REFUSAL_THREADS, AdmissionGate
from serving.batching import BatchScheduler
from serving.errors import ServingError
from serving.generation import generate_stream
from serving.manager import ModelManager
from serving.metrics import ServingMetrics
from serving.security import TlsConfig, bearer_matches

log = logging.getLogger("genpipe.serving")
PROTOCOL = "grpc"
# grpcio reports ~2**63 ns left when the client set no deadline; anything this far off is none.
NO_DEADLINE_SECONDS = 365 * 24 * 3600.0


def _answer(context: grpc.ServicerContext, metrics: ServingMetrics, api: str, work: Callable):
    """Run ``work(record)``; a `ServingError` becomes the RPC's status code and message."""
    try:
        with metrics.track(PROTOCOL, api) as record:
            return work(record)
    except ServingError as error:
        context.abort(error.code, error.message)
    except Exception as error:  # noqa: BLE001 - report, do not leak a bare UNKNOWN
        log.exception("%s failed", api)
        context.abort(grpc.StatusCode.INTERNAL, f"{api} failed: {type(error).__name__}: {error}")


def _stream(
    context: grpc.ServicerContext, metrics: ServingMetrics, api: str, work: Callable
) -> Iterator:
    """`_answer` for a response stream: yield what ``work(record)`` yields."""
    try:
        with metrics.track(PROTOCOL, api) as record:
            yield from work(record)
    except ServingError as error:
        if context.is_active():  # a cancelled call has no one to tell
            context.abort(error.code, error.message)
    except Exception as error:  # noqa: BLE001
        log.exception("%s failed", api)
        context.abort(grpc.StatusCode.INTERNAL, f"{api} failed: {type(error).__name__}: {error}")


def request_deadline(context: grpc.ServicerContext) -> float | None:
    """The client's deadline as a `time.monotonic` time (None: the client set none)."""
    remaining = context.time_remaining()
    if remaining is None or remaining > NO_DEADLINE_SECONDS:
        return None
    return time.monotonic() + remaining


def _unimplemented(api: str, context: grpc.ServicerContext) -> Any:
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{api} is not implemented by genpipe's model server: its models export Predict "
        "signatures only; call Predict with model_spec.signature_name (GetModelMetadata lists "
        "them)",
    )


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; the tf.Example APIs answer UNIMPLEMENTED."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics,
        batching: BatchScheduler | None = None,
    ):
        self.manager = manager
        self.metrics = metrics
        self.batching = batching  # None: each request runs by itself

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        deadline = request_deadline(context)  # the run stops there instead of computing on

        def work(record: core.RequestRecord):
            return core.predict(self.manager, request, record, deadline, self.batching)

        return _answer(context, self.metrics, "Predict", work)

    def GetModelMetadata(self, request, context):  # noqa: N802
        def work(record: core.RequestRecord):
            record.model = request.model_spec.name
            return core.model_metadata(self.manager, request)

        return _answer(context, self.metrics, "GetModelMetadata", work)

    def Classify(self, request, context):  # noqa: N802
        return _unimplemented("Classify", context)

    def Regress(self, request, context):  # noqa: N802
        return _unimplemented("Regress", context)

    def MultiInference(self, request, context):  # noqa: N802
        return _unimplemented("MultiInference", context)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager: ModelManager, metrics: ServingMetrics):
        self.manager = manager
        self.metrics = metrics

    def GetModelStatus(self, request, context):  # noqa: N802
        def work(record: core.RequestRecord):
            record.model = request.model_spec.name
            return core.model_status(self.manager, request)

        return _answer(context, self.metrics, "GetModelStatus", work)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        def work(record: core.RequestRecord):
            try:
                self.manager.reload_config(request.config)
            except ServingError as error:
                log.error("model config reload refused (%s): %s", error.code.name, error.message)
                raise
            log.info("model config reloaded: %s", ", ".join(self.manager.model_names()))
            return model_management_pb2.ReloadConfigResponse()

        return _answer(context, self.metrics, "HandleReloadConfigRequest", work)


class GenerationService:
    """genpipe.serving.GenerationService: GenerateStream, outside request batching."""

    def __init__(self, manager: ModelManager, metrics: ServingMetrics):
        self.manager = manager
        self.metrics = metrics

    def GenerateStream(self, request, context):  # noqa: N802
        deadline = request_deadline(context)

        def work(record: core.RequestRecord):
            return generate_stream(self.manager, request, record, deadline, context.is_active)

        yield from _stream(context, self.metrics, "GenerateStream", work)


def _deny(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'",
    )


# A denial of the same kind as the method it answers, so that streaming calls get it as well.
_DENIALS = {
    (False, False): grpc.unary_unary_rpc_method_handler(_deny),
    (False, True): grpc.unary_stream_rpc_method_handler(_deny),
    (True, False): grpc.stream_unary_rpc_method_handler(_deny),
    (True, True): grpc.stream_stream_rpc_method_handler(_deny),
}


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` metadata (UNAUTHENTICATED)."""

    def __init__(self, token: str):
        self._token = token

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        handler = continuation(handler_call_details)  # a lookup: nothing runs yet
        if bearer_matches(metadata.get("authorization"), self._token):
            return handler
        if handler is None:  # an unknown method: still no answer without the token
            return _DENIALS[False, False]
        return _DENIALS[handler.request_streaming, handler.response_streaming]


@contextmanager
def _admission(gate: AdmissionGate, context: grpc.ServicerContext) -> Iterator[None]:
    """Hold ``gate`` for one call: a refusal becomes the call's RESOURCE_EXHAUSTED, a deadline
    that passes while the call waits for a thread its DEADLINE_EXCEEDED."""
    try:
        gate.admit()
    except ServingError as error:
        context.abort(error.code, error.message)
    try:
        try:
            gate.start_run(request_deadline(context))
        except ServingError as error:
            context.abort(error.code, error.message)
        try:
            yield
        finally:
            gate.end_run()
    finally:
        gate.leave()


def _admitted(gate: AdmissionGate, behavior: Callable, streaming: bool) -> Callable:
    """``behavior`` run only once ``gate`` admits its call and gives it a thread."""
    if streaming:

        def run_stream(request, context):
            with _admission(gate, context):
                yield from behavior(request, context)

        return run_stream

    def run(request, context):
        with _admission(gate, context):
            return behavior(request, context)

    return run


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Bounds the calls the server holds (serving/admission.py): every method's behaviour is
    wrapped so that it first passes ``gate``. Outermost, so a denied token costs a slot only
    for the instant of its denial."""

    def __init__(self, gate: AdmissionGate):
        self._gate = gate

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        gate = self._gate
        serialize = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            behavior = _admitted(gate, handler.stream_stream, streaming=True)
            return grpc.stream_stream_rpc_method_handler(behavior, **serialize)
        if handler.request_streaming:
            behavior = _admitted(gate, handler.stream_unary, streaming=False)
            return grpc.stream_unary_rpc_method_handler(behavior, **serialize)
        if handler.response_streaming:
            behavior = _admitted(gate, handler.unary_stream, streaming=True)
            return grpc.unary_stream_rpc_method_handler(behavior, **serialize)
        behavior = _admitted(gate, handler.unary_unary, streaming=False)
        return grpc.unary_unary_rpc_method_handler(behavior, **serialize)


class _Registry:
    """Hands service registrations to a `grpc.Server` and keeps the full method names
    ("/package.Service/Method") each one adds."""

    def __init__(self, server: grpc.Server):
        self.server = server
        self.methods: list[str] = []

    def add_generic_rpc_handlers(self, handlers) -> None:
        for handler in handlers:
            # grpc.method_handlers_generic_handler keeps its table by full method name.
            self.methods += sorted(getattr(handler, "_method_handlers", {}))
        self.server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers) -> None:
        self.server.add_registered_method_handlers(service_name, method_handlers)


def registered_methods(server: grpc.Server) -> tuple[str, ...]:
    """Every method a server from `build_grpc_server` answers, "/package.Service/Method"."""
    return server.genpipe_methods


def build_grpc_server(
    manager: ModelManager,
    metrics: ServingMetrics,
    *,
    host: str,
    port: int,
    max_message_bytes: int,
    gate: AdmissionGate,
    tls: TlsConfig | None = None,
    token: str | None = None,
    channel_arguments: Sequence[tuple[str, int | str]] = (),
    batching: BatchScheduler | None = None,
) -> tuple[grpc.Server, int]:
    """A started-ready (not yet started) gRPC server and the port it bound.

    ``channel_arguments`` (--grpc_channel_arguments) replace our options of the same key.
    ``gate`` bounds the calls held at once; the thread pool has room for its running and
    waiting calls plus `REFUSAL_THREADS`.
    """
    given = {key for key, _ in channel_arguments}
    ours = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    options = [option for option in ours if option[0] not in given] + list(channel_arguments)
    interceptors: list[grpc.ServerInterceptor] = [AdmissionInterceptor(gate)]
    if token:
        interceptors.append(BearerTokenInterceptor(token))
    threads = gate.limit + REFUSAL_THREADS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=options,
    )
    registry = _Registry(server)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager, metrics, batching), registry
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(manager, metrics), registry
    )
    add_generation_service(registry, GenerationService(manager, metrics).GenerateStream)
    server.genpipe_methods = tuple(registry.methods)  # what the auth tests walk
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, tls.grpc_credentials())
    if not bound:
        raise OSError(f"cannot listen for gRPC on {address} (port in use?)")
    return server, bound
