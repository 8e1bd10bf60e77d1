"""Prometheus metrics of the model server: request counts and latencies per model, version,
signature, API, protocol and status, plus the state of every model version."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from serving.errors import ServingError
from serving.manager import AVAILABLE, ModelManager, State
from serving.predict import RequestRecord

LABELS = ("model", "version", "signature", "api", "protocol", "status")
# Latency buckets from 0.5 ms (a tiny model in process) to 2 minutes (a style transfer).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)


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


class ServingMetrics:
    """The server's metrics in their own registry (several servers may share a process)."""

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
        if manager is not None:
            self.registry.register(_VersionStates(manager))

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
        except Exception:
            status = grpc.StatusCode.INTERNAL.name
            raise
        finally:
            labels = (record.model, record.version, record.signature, api, protocol, status)
            self.requests.labels(*labels).inc()
            self.latency.labels(*labels).observe(time.perf_counter() - start)

    def render(self) -> tuple[bytes, str]:
        """The exposition page and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
