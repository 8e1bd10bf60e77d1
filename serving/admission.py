"""Overload protection: a bound on the requests a front end holds at once.

Each front end (gRPC, REST) runs at most as many requests as it has worker threads
(--grpc_max_threads, --rest_api_num_threads) and lets at most --max_enqueued_requests more wait
for a turn. A request beyond that is refused at once with RESOURCE_EXHAUSTED (HTTP 429), without
being parsed, so a flood never builds a queue without end, the requests already admitted finish
in bounded time, and the server answers normally as soon as the load drops.

`AdmissionGate` is the count; the front ends call it (`serving/grpc_service.py`,
`serving/rest.py`). Refusals and requests in flight are metrics (`serving/metrics.py`).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import grpc

from serving.errors import ServingError

# gRPC threads kept out of reach of admitted requests, so that a refusal (which runs on a
# gRPC worker thread, like every call) never waits behind requests that are waiting their turn.
REFUSAL_THREADS = 2
# Seconds a refused REST client is told to wait (HTTP Retry-After).
RETRY_AFTER_SECONDS = 1
# What each protocol's worker-thread count is called on the command line.
THREAD_FLAGS = {"grpc": "--grpc_max_threads", "rest": "--rest_api_num_threads"}


class AdmissionMetrics(Protocol):
    """Where a gate reports (`serving.metrics.AdmissionMetrics`)."""

    def refused(self, protocol: str) -> None: ...

    def in_flight(self, protocol: str, change: int) -> None: ...


class AdmissionGate:
    """At most ``threads`` requests of one protocol run at once and ``queued`` more wait; the
    rest are refused. Thread-safe.

    `admit` / `leave` bracket a request; `start_run` / `end_run` bracket its run where waiting
    requests hold a thread (gRPC; REST requests wait in its executor's queue instead).
    """

    def __init__(
        self,
        protocol: str,
        threads: int,
        queued: int,
        metrics: AdmissionMetrics | None = None,
    ):
        if threads <= 0:
            flag = THREAD_FLAGS.get(protocol, "threads")
            raise ValueError(f"{flag} must be positive, got {threads}")
        if queued < 0:
            raise ValueError(f"--max_enqueued_requests must be 0 or more, got {queued}")
        self.protocol = protocol
        self.threads = threads
        self.queued = queued
        self._metrics = metrics
        self._lock = threading.Lock()
        self._in_flight = 0
        self._runs = threading.BoundedSemaphore(threads)

    @property
    def limit(self) -> int:
        """Requests held at once (running plus waiting) before refusals start."""
        return self.threads + self.queued

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished."""
        with self._lock:
            return self._in_flight

    def admit(self) -> None:
        """Count a new request in, or refuse it (RESOURCE_EXHAUSTED) when the gate is full."""
        with self._lock:
            full = self._in_flight >= self.limit
            if not full:
                self._in_flight += 1
        if full:
            if self._metrics is not None:
                self._metrics.refused(self.protocol)
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server overloaded: {self.limit} {self.protocol} requests are already running "
                f"or waiting ({THREAD_FLAGS.get(self.protocol, 'threads')} {self.threads} + "
                f"--max_enqueued_requests {self.queued}); retry later",
            )
        if self._metrics is not None:
            self._metrics.in_flight(self.protocol, 1)

    def leave(self) -> None:
        """Count an admitted request out."""
        with self._lock:
            self._in_flight -= 1
        if self._metrics is not None:
            self._metrics.in_flight(self.protocol, -1)

    def start_run(self, deadline: float | None = None) -> None:
        """Take one of the ``threads`` run slots for an admitted request, waiting for one until
        its ``deadline`` (a `time.monotonic` time; None: as long as it takes); a deadline that
        passes first is DEADLINE_EXCEEDED. Give it back with `end_run`."""
        wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._runs.acquire(timeout=wait):
            raise ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"Deadline exceeded while waiting for one of the {self.threads} "
                f"{self.protocol} worker threads",
            )

    def end_run(self) -> None:
        self._runs.release()
