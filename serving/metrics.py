"""Prometheus metrics of the model server.

genpipe's own metrics (`genpipe_serving_*`, prometheus_client) carry model, version and
signature labels; next to them the page repeats the metrics TF Serving users already chart,
under tensorflow_model_server's names, labels and units (`:tensorflow:serving:*`, microseconds).
docs/serving.md#monitoring lists every metric.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from contracts import text_lm
from serving.errors import ServingError
from serving.manager import AVAILABLE, ModelManager, State
from serving.predict import RequestRecord
from serving.servable import Servable

LABELS = ("model", "version", "signature", "api", "protocol", "status")
RUN_LABELS = ("model", "version", "signature")
BATCH_LABELS = ("model", "signature")
# Latency buckets from 0.5 ms (a tiny model in process) to 2 minutes (a style transfer).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# TF Serving's latency buckets: 10 us growing by 1.8x, 33 of them (about 20 minutes).
TF_LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
# Tokens generated: the sum of this output of text_lm's generate, and one per non-empty word of
# its word-by-word signatures (a call's word is empty unless it belongs to the continuation).
TOKENS_SIGNATURE, TOKENS_OUTPUT = text_lm.GENERATE.name, text_lm.GENERATE.output("num_tokens").name
WORD_SIGNATURES = (text_lm.GENERATE_START.name, text_lm.GENERATE_STEP.name)
WORD_OUTPUT = text_lm.GENERATE_STEP.output("word").name
# gRPC APIs TF Serving counts in :tensorflow:serving:request_count (REST counts every request).
TF_COUNTED_GRPC_APIS = frozenset({"Predict", "Classify", "Regress"})
ENTRYPOINTS = {"grpc": "GRPC", "rest": "REST"}
TF_RUNTIME = "TF1"  # TF Serving's runtime label for the Session path this server runs


class _VersionStates:
    """Collector of `genpipe_serving_model_version_available` (1 while a version serves)."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    def collect(self):
        family = GaugeMetricFamily(
            "genpipe_serving_model_version_available",
            "1 when the model version is AVAILABLE, else 0; label state is its current state",
            labels=("model", "version", "state"),
        )
        for model, version, state in self.manager.snapshot():
            value = 1.0 if state == AVAILABLE else 0.0
            family.add_metric((model, str(version), State.Name(state)), value)
        yield family


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class TfMetric:
    """One metric under TensorFlow's monitoring name, written as TF Serving's exporter writes it.

    prometheus_client accepts the leading colon but always adds `_total` to counter samples,
    and dashboards built on the real server query the bare name; so these few metrics keep
    their own cells and render their own text-format lines.
    """

    def __init__(
        self, name: str, labels: Sequence[str], buckets: Sequence[float] | None = None
    ) -> None:
        self.name = name
        self.labels = tuple(labels)
        self.buckets = tuple(buckets) if buckets is not None else None
        self._cells: dict[tuple[str, ...], list[float]] = {}
        self._lock = threading.Lock()

    def inc(self, labels: Sequence[str], amount: float = 1) -> None:
        """Add to a counter cell."""
        with self._lock:
            cell = self._cells.setdefault(tuple(labels), [0])
            cell[0] += amount

    def observe(self, labels: Sequence[str], value: float) -> None:
        """Add a sample to a histogram cell: per-bucket counts, then the sum."""
        assert self.buckets is not None, f"{self.name} is a counter"
        with self._lock:
            cell = self._cells.setdefault(tuple(labels), [0] * (len(self.buckets) + 2))
            index = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
            cell[index] += 1
            cell[-1] += value

    def lines(self) -> list[str]:
        kind = "counter" if self.buckets is None else "histogram"
        lines = [f"# TYPE {self.name} {kind}"]
        with self._lock:
            cells = sorted(self._cells.items())
        for values, cell in cells:
            pairs = [f'{k}="{_label_value(v)}"' for k, v in zip(self.labels, values, strict=True)]
            labels = ",".join(pairs)
            if self.buckets is None:
                lines.append(f"{self.name}{{{labels}}} {int(cell[0])}")
                continue
            prefix = f"{self.name}_bucket{{{labels}{',' if labels else ''}"
            total = 0
            for i, limit in enumerate((*(f"{b:g}" for b in self.buckets), "+Inf")):
                total += cell[i]
                lines.append(f'{prefix}le="{limit}"}} {total}')
            lines.append(f"{self.name}_sum{{{labels}}} {cell[-1]:g}")
            lines.append(f"{self.name}_count{{{labels}}} {total}")
        return lines


class TfServingMetrics:
    """TF Serving's own metric names (and TensorFlow's SavedModel load metrics)."""

    def __init__(self) -> None:
        self.request_count = TfMetric(":tensorflow:serving:request_count", ("model_name", "status"))
        self.request_latency = TfMetric(
            ":tensorflow:serving:request_latency",
            ("model_name", "API", "entrypoint"),
            TF_LATENCY_BUCKETS_US,
        )
        self.runtime_latency = TfMetric(
            ":tensorflow:serving:runtime_latency",
            ("model_name", "API", "runtime"),
            TF_LATENCY_BUCKETS_US,
        )
        self.load_attempt_count = TfMetric(
            ":tensorflow:cc:saved_model:load_attempt_count", ("model_path", "status")
        )
        self.load_latency = TfMetric(":tensorflow:cc:saved_model:load_latency", ("model_path",))

    def text(self) -> str:
        families = (
            self.request_count,
            self.request_latency,
            self.runtime_latency,
            self.load_attempt_count,
            self.load_latency,
        )
        return "".join(line + "\n" for family in families for line in family.lines())


class BatchingMetrics:
    """Where request batching (serving/batching.py) reports: one batch's size, the queue depth."""

    def __init__(self, registry: CollectorRegistry):
        self.batch_size = Histogram(
            "genpipe_serving_batch_size",
            "Examples per batched session run, by model and signature",
            BATCH_LABELS,
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "genpipe_serving_batch_queue_depth",
            "Requests waiting to join a batch, by model and signature",
            BATCH_LABELS,
            registry=registry,
        )


class AdmissionMetrics:
    """Where the front ends' overload gates (serving/admission.py) report."""

    def __init__(self, registry: CollectorRegistry):
        self.refusals = Counter(
            "genpipe_serving_requests_refused",
            "Requests refused with RESOURCE_EXHAUSTED (HTTP 429) because the front end already "
            "held its worker threads plus --max_enqueued_requests, by protocol",
            ("protocol",),
            registry=registry,
        )
        self.held = Gauge(
            "genpipe_serving_requests_in_flight",
            "Requests running or waiting for a worker thread, by protocol",
            ("protocol",),
            registry=registry,
        )

    def refused(self, protocol: str) -> None:
        self.refusals.labels(protocol).inc()

    def in_flight(self, protocol: str, change: int) -> None:
        self.held.labels(protocol).inc(change)


class ServingMetrics:
    """The server's metrics in their own registry (several servers may share a process).

    Given a manager, it listens to it (`ManagerListener`): loads, unloads and session runs.
    """

    def __init__(self, manager: ModelManager | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "genpipe_serving_requests",
            "Requests answered, by model, version, signature, API, protocol and status code",
            LABELS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "genpipe_serving_request_latency_seconds",
            "Request latency in seconds, by model, version, signature, API, protocol and status",
            LABELS,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.runtime = Histogram(
            "genpipe_serving_runtime_latency_seconds",
            "Session run time in seconds (no parsing or queueing), by model, version, signature",
            RUN_LABELS,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "genpipe_serving_generated_tokens",
            f"Tokens generated: the sum of the {TOKENS_OUTPUT} output of {TOKENS_SIGNATURE}, "
            f"plus the non-empty {WORD_OUTPUT} outputs of {', '.join(WORD_SIGNATURES)}",
            RUN_LABELS,
            registry=self.registry,
        )
        self.loads = Counter(
            "genpipe_serving_model_loads",
            "Version loads (warmup included), by model and status (success or fail)",
            ("model", "status"),
            registry=self.registry,
        )
        self.unloads = Counter(
            "genpipe_serving_model_unloads",
            "Versions unloaded, by model",
            ("model",),
            registry=self.registry,
        )
        self.batching = BatchingMetrics(self.registry)
        self.admission = AdmissionMetrics(self.registry)
        self.tf = TfServingMetrics()
        if manager is not None:
            self.registry.register(_VersionStates(manager))
            manager.listener = self

    @contextmanager
    def track(self, protocol: str, api: str) -> Iterator[RequestRecord]:
        """Time a request; the caller fills the yielded record as the request resolves."""
        record = RequestRecord()
        start = time.perf_counter()
        status = grpc.StatusCode.OK.name
        try:
            yield record
        except ServingError as error:
            status = error.code.name
            raise
        except GeneratorExit:  # a response stream the client left
            status = grpc.StatusCode.CANCELLED.name
            raise
        except Exception:
            status = grpc.StatusCode.INTERNAL.name
            raise
        finally:
            seconds = time.perf_counter() - start
            labels = (record.model, record.version, record.signature, api, protocol, status)
            self.requests.labels(*labels).inc()
            self.latency.labels(*labels).observe(seconds)
            self._track_tf(record.model, protocol, api, status, seconds)

    def _track_tf(self, model: str, protocol: str, api: str, status: str, seconds: float) -> None:
        """As TF Serving: every REST request and gRPC predictions count; latency on success."""
        if protocol == "grpc" and api not in TF_COUNTED_GRPC_APIS:
            return
        self.tf.request_count.inc((model, status))
        if status == grpc.StatusCode.OK.name:
            entrypoint = ENTRYPOINTS.get(protocol, protocol.upper())
            self.tf.request_latency.observe((model, api, entrypoint), seconds * 1e6)

    # -- ManagerListener -------------------------------------------------------------------

    def version_loaded(
        self, name: str, version: int, path: str, seconds: float, error: ServingError | None
    ) -> None:
        status = "fail" if error is not None else "success"
        self.loads.labels(name, status).inc()
        self.tf.load_attempt_count.inc((path, status))
        if error is None:
            self.tf.load_latency.inc((path,), round(seconds * 1e6))

    def version_unloaded(self, name: str, version: int) -> None:
        self.unloads.labels(name).inc()

    def version_ran(
        self, servable: Servable, signature: str, seconds: float, outputs: Mapping[str, np.ndarray]
    ) -> None:
        labels = (servable.name, str(servable.version), signature)
        self.runtime.labels(*labels).observe(seconds)
        self.tf.runtime_latency.observe((servable.name, "Predict", TF_RUNTIME), seconds * 1e6)
        if signature == TOKENS_SIGNATURE and TOKENS_OUTPUT in outputs:
            self.tokens.labels(*labels).inc(float(np.sum(outputs[TOKENS_OUTPUT])))
        elif signature in WORD_SIGNATURES and WORD_OUTPUT in outputs:
            self.tokens.labels(*labels).inc(sum(1 for word in outputs[WORD_OUTPUT].flat if word))

    def render(self) -> tuple[bytes, str]:
        """The exposition page and its content type."""
        return generate_latest(self.registry) + self.tf.text().encode(), CONTENT_TYPE_LATEST
