"""Request batching, as tensorflow_model_server's ``--enable_batching``.

Concurrent Predict calls to the same signature of the same version are queued and merged along
the batch dimension (every input concatenated on axis 0), run once through `Servable.run`, and
the outputs are split back by each request's row count. The contract keys randomness per row
(by each row's seed), so a caller gets what it would have got alone.

Queues: one per (servable, signature, output filter, input shapes after the batch dimension),
so requests with different non-batch shapes form separate batches; with
``pad_variable_length_inputs`` they share a queue and are padded to the batch's largest shape
with each tensor's first element, as TF Serving pads (the outputs are not un-padded). Requests
whose inputs have no common batch dimension (a scalar, or inputs of different lengths) run
alone. A queue holds batches in arrival order and only the last one takes new requests; a batch
is ready when it is full (``max_batch_size`` rows), when a later batch exists, or when
``batch_timeout_micros`` have passed since its first request. A request that needs a new batch
while ``max_enqueued_batches`` are waiting answers UNAVAILABLE at once, and one with more rows
than ``max_batch_size`` INVALID_ARGUMENT, as in TF Serving.

There are no batch threads: the callers waiting on a queue take turns running its ready batches,
at most ``num_batch_threads`` merged runs at a time across the server (TF Serving's limit),
which saves two thread hand-offs per request. The queues of a version are kept in a
`weakref.WeakKeyDictionary` on its servable and emptied queues are dropped at once, so an
unloaded version (the manager unloads it only after its last request) leaves nothing behind.

Deadlines: a merged run gets the longest remaining deadline of its requests (none if one has
none); a request whose deadline passes while queued answers DEADLINE_EXCEEDED. If a merged run
fails (say INVALID_ARGUMENT from one bad row) or its outputs cannot be split by rows, each of
its requests is run again alone, so only the bad one fails.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from serving.errors import ServingError, invalid_argument
from serving.predict import timeout_ms
from serving.servable import DEFAULT_SIGNATURE, Servable

log = logging.getLogger("genpipe.serving")

# -- the batching_parameters_file -------------------------------------------------------------

# TF Serving's defaults where a field is absent: SharedBatchScheduler's QueueOptions and Options
# (tensorflow/core/kernels/batching_util/shared_batch_scheduler.h).
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10


def schedulable_cpus() -> int:
    """TF Serving's default num_batch_threads: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's `BatchingParameters` (session_bundle_config.proto), checked."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = field(default_factory=schedulable_cpus)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) <= 0:
                raise invalid_argument(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise invalid_argument(
                f"batch_timeout_micros must be 0 or more, got {self.batch_timeout_micros}"
            )
        sizes = self.allowed_batch_sizes
        if any(size <= 0 for size in sizes):
            raise invalid_argument(f"allowed_batch_sizes must be positive, got {list(sizes)}")
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
            raise invalid_argument(
                f"allowed_batch_sizes entries must be increasing, got {list(sizes)}"
            )
        if sizes and sizes[-1] != self.max_batch_size:
            raise invalid_argument(
                f"the last entry of allowed_batch_sizes must equal max_batch_size; last entry "
                f"was {sizes[-1]}, expected {self.max_batch_size}"
            )

    def padded_size(self, rows: int) -> int:
        """The smallest allowed batch size holding ``rows`` (``rows`` without a list)."""
        return next((size for size in self.allowed_batch_sizes if size >= rows), rows)


# Int64Value fields and their numbers in session_bundle_config.proto; 5 is thread_pool_name
# (StringValue), 6 allowed_batch_sizes, 7 pad_variable_length_inputs, 8
# enable_large_batch_splitting (BoolValue).
_INT64_FIELDS = {
    "max_batch_size": 1,
    "batch_timeout_micros": 2,
    "max_enqueued_batches": 3,
    "num_batch_threads": 4,
    "max_execution_batch_size": 9,
}
_message_class: Any = None


def _batching_parameters_class() -> Any:
    """The `BatchingParameters` message type, built from a descriptor at run time.

    The proto is not in the installed tensorflow-serving-api package and grpc_tools is not
    installed to compile it; a built type lets `text_format.Parse` read the file with all of
    protobuf's text syntax (comments, optional colons, field order) and refuse unknown fields,
    which a hand-written parser would only approximate.
    """
    global _message_class
    if _message_class is not None:
        return _message_class
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="genpipe/batching_parameters.proto",
        package="tensorflow.serving",
        dependency=[wrappers.name],
        syntax="proto3",
    )
    message = proto.message_type.add(name="BatchingParameters")
    Field = descriptor_pb2.FieldDescriptorProto  # noqa: N806 - a proto class
    optional, repeated = Field.LABEL_OPTIONAL, Field.LABEL_REPEATED
    for name, number in _INT64_FIELDS.items():
        message.field.add(
            name=name,
            number=number,
            label=optional,
            type=Field.TYPE_MESSAGE,
            type_name=".google.protobuf.Int64Value",
        )
    message.field.add(
        name="thread_pool_name",
        number=5,
        label=optional,
        type=Field.TYPE_MESSAGE,
        type_name=".google.protobuf.StringValue",
    )
    message.field.add(name="allowed_batch_sizes", number=6, label=repeated, type=Field.TYPE_INT64)
    message.field.add(
        name="pad_variable_length_inputs", number=7, label=optional, type=Field.TYPE_BOOL
    )
    message.field.add(
        name="enable_large_batch_splitting",
        number=8,
        label=optional,
        type=Field.TYPE_MESSAGE,
        type_name=".google.protobuf.BoolValue",
    )
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.21
        _message_class = message_factory.GetMessageClass(descriptor)
    else:
        _message_class = message_factory.MessageFactory(pool).GetPrototype(descriptor)
    return _message_class


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingParameters:
    """Parse a `BatchingParameters` text proto; a bad one is INVALID_ARGUMENT naming the field.

    ``thread_pool_name`` and ``max_execution_batch_size`` are accepted and unused (there are no
    batch threads, and batches are never split); ``enable_large_batch_splitting: true`` is
    refused.
    """
    message = _batching_parameters_class()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise invalid_argument(f"{source}: not a BatchingParameters text proto: {error}") from error
    if message.enable_large_batch_splitting.value:
        raise invalid_argument(
            f"{source}: enable_large_batch_splitting is not supported by genpipe's server; "
            "remove it (requests larger than max_batch_size are refused)"
        )
    given: dict[str, Any] = {
        name: getattr(message, name).value
        for name in _INT64_FIELDS
        if name != "max_execution_batch_size" and message.HasField(name)
    }
    try:
        return BatchingParameters(
            **given,
            allowed_batch_sizes=tuple(message.allowed_batch_sizes),
            pad_variable_length_inputs=message.pad_variable_length_inputs,
        )
    except ServingError as error:
        raise invalid_argument(f"{source}: {error.message}") from error


def read_batching_parameters(path: str | None) -> BatchingParameters:
    """The parameters in ``path`` (TF Serving's defaults when None)."""
    if not path:
        return BatchingParameters()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise invalid_argument(f"cannot read --batching_parameters_file {path}: {error}") from error
    return parse_batching_parameters(text, path)


# -- queues and batches -----------------------------------------------------------------------


@dataclass(eq=False)
class _Task:
    """One request in a queue; its fields change under the scheduler's lock."""

    inputs: Mapping[str, np.ndarray]
    rows: int
    deadline: float | None
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    alone: bool = False  # its merged run failed or could not be split: run it by itself
    done: bool = False


@dataclass(eq=False)
class _Batch:
    opened: float  # time.monotonic() of its first request
    tasks: list[_Task] = field(default_factory=list)
    rows: int = 0


@dataclass(eq=False)
class _Queue:
    key: tuple  # (signature, output filter, input shapes): see `BatchScheduler._shape_key`
    model: str
    batches: deque[_Batch] = field(default_factory=deque)

    @property
    def signature(self) -> str:
        return self.key[0]

    @property
    def output_filter(self) -> tuple[str, ...]:
        return self.key[1]


def _rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    """The common batch size of the inputs, or None when they have none to merge on."""
    sizes = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if len(sizes) != 1:
        return None
    (rows,) = sizes
    return rows if rows else None


def _deadline_error(message: str) -> tf.errors.DeadlineExceededError:
    return tf.errors.DeadlineExceededError(None, None, message)


def _pad_to(array: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """``array`` grown to ``dims`` after its batch dimension, filled with its first element."""
    if array.shape[1:] == dims:
        return array
    padded = np.full((array.shape[0], *dims), array.flat[0], dtype=array.dtype)
    padded[tuple(slice(0, size) for size in array.shape)] = array
    return padded


def merge(
    parts: Sequence[Mapping[str, np.ndarray]], size: int, pad: bool = False
) -> dict[str, np.ndarray]:
    """Concatenate the requests' inputs on axis 0 (padding non-batch dims to the largest when
    ``pad``), then repeat the last row up to ``size`` rows."""
    merged = {}
    for alias in parts[0]:
        arrays = [inputs[alias] for inputs in parts]
        if pad:
            dims = tuple(np.max([a.shape[1:] for a in arrays], axis=0).tolist())
            arrays = [_pad_to(a, dims) for a in arrays]
        array = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        if size > array.shape[0]:
            array = np.concatenate([array, np.repeat(array[-1:], size - array.shape[0], axis=0)])
        merged[alias] = array
    return merged


def split(
    outputs: Mapping[str, np.ndarray], rows: Sequence[int], size: int
) -> list[dict[str, np.ndarray]] | None:
    """Each request's rows of every output (padding rows dropped); None when an output is not
    batch-major (no leading dimension of ``size``)."""
    if any(array.ndim == 0 or array.shape[0] != size for array in outputs.values()):
        return None
    bounds = np.cumsum([0, *rows]).tolist()
    return [
        {alias: array[start:stop] for alias, array in outputs.items()}
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]


class BatchScheduler:
    """Merges concurrent `run` calls per queue (see the module docstring); thread-safe.

    ``metrics`` (optional) is `serving.metrics.BatchingMetrics`: ``batch_size`` observes the
    rows of each run (before padding), ``queue_depth`` counts the requests waiting.
    """

    def __init__(self, parameters: BatchingParameters | None = None, metrics: Any = None):
        self.parameters = parameters or BatchingParameters()
        self._metrics = metrics
        self._lock = threading.Condition(threading.Lock())
        self._queues: weakref.WeakKeyDictionary[Servable, dict[tuple, _Queue]] = (
            weakref.WeakKeyDictionary()
        )
        # Signatures whose outputs turned out not to be batch-major: they always run alone.
        self._unsplittable: weakref.WeakKeyDictionary[Servable, set[str]] = (
            weakref.WeakKeyDictionary()
        )
        self._running = 0  # merged runs in progress, at most num_batch_threads

    @property
    def running(self) -> int:
        """Merged runs in progress."""
        with self._lock:
            return self._running

    def queue_count(self, servable: Servable | None = None) -> int:
        """Queues holding requests (of ``servable``, or of all versions)."""
        with self._lock:
            if servable is not None:
                return len(self._queues.get(servable, {}))
            return sum(len(queues) for queues in self._queues.values())

    def run(
        self,
        servable: Servable,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """`Servable.run` through a batch (inputs already validated); TensorFlow's errors
        propagate as they are, a full queue is UNAVAILABLE."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        rows = _rows(inputs)
        with self._lock:
            alone = rows is None or signature_name in self._unsplittable.get(servable, ())
        if alone:
            return servable.run(signature_name, inputs, output_filter, timeout_ms(deadline))
        limit = self.parameters.max_batch_size
        if rows > limit:
            raise invalid_argument(
                f"Task size {rows} is larger than maximum input batch size {limit} "
                "(max_batch_size of the batching parameters)"
            )
        if deadline is not None and deadline <= time.monotonic():
            raise _deadline_error("deadline expired before the request was queued")
        task = _Task(inputs, rows, deadline)
        key = (signature_name, tuple(output_filter), self._shape_key(inputs))
        with self._lock:
            # No notify: a batch this request makes ready is the front one of its own queue,
            # which its caller runs itself (below) as soon as a turn is free.
            queue = self._enqueue(servable, key, task)
            self._serve(servable, queue, task)
        if task.alone:
            return servable.run(signature_name, inputs, output_filter, timeout_ms(deadline))
        if task.error is not None:
            raise task.error
        return task.outputs

    def _shape_key(self, inputs: Mapping[str, np.ndarray]) -> tuple:
        """What requests sharing a queue must have in common besides the signature."""

        def shape(array: np.ndarray) -> tuple:
            if self.parameters.pad_variable_length_inputs and array.size:
                return ("rank", array.ndim)  # any sizes: padded to the batch's largest
            return ("shape", *array.shape[1:])  # an empty one has no first element to pad with

        return tuple(sorted((alias, shape(array)) for alias, array in inputs.items()))

    # -- under the lock -----------------------------------------------------------------------

    def _enqueue(self, servable: Servable, key: tuple, task: _Task) -> _Queue:
        queues = self._queues.setdefault(servable, {})
        queue = queues.get(key)
        if queue is None:
            queue = queues[key] = _Queue(key, servable.name)
        last = queue.batches[-1] if queue.batches else None
        if last is None or last.rows + task.rows > self.parameters.max_batch_size:
            if len(queue.batches) >= self.parameters.max_enqueued_batches:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full "
                    f"({self.parameters.max_enqueued_batches} batches of signature "
                    f"'{queue.signature}' of {servable.name} version {servable.version} wait; "
                    "max_enqueued_batches)",
                )
            last = _Batch(opened=time.monotonic())
            queue.batches.append(last)
        last.tasks.append(task)
        last.rows += task.rows
        self._depth(queue, 1)
        return queue

    def _serve(self, servable: Servable, queue: _Queue, task: _Task) -> None:
        """Wait until ``task`` is done, running the queue's ready batches when a turn is free."""
        while not task.done:
            now = time.monotonic()
            if task.deadline is not None and now >= task.deadline:
                if self._withdraw(servable, queue, task):
                    raise _deadline_error("deadline expired while waiting in the batching queue")
                raise _deadline_error("deadline expired while the batch ran")
            batch = self._take_ready(servable, queue, now)
            if batch is None:
                self._lock.wait(self._wait_seconds(queue, task, now))
                continue
            self._running += 1
            self._lock.release()
            try:
                self._process(servable, queue, batch)
            except Exception:  # noqa: BLE001 - a bug here must not leave callers waiting
                log.exception("a merged run of %s failed; its requests run alone", servable)
                for failed in batch.tasks:
                    failed.alone = failed.outputs is None and failed.error is None
            finally:
                self._lock.acquire()
                self._running -= 1
                for done in batch.tasks:
                    done.done = True
                self._lock.notify_all()

    def _take_ready(self, servable: Servable, queue: _Queue, now: float) -> _Batch | None:
        """The queue's first batch if it is ready and a run may start now (removed)."""
        if not queue.batches or self._running >= self.parameters.num_batch_threads:
            return None
        first = queue.batches[0]
        timeout = self.parameters.batch_timeout_micros / 1e6
        full = first.rows >= self.parameters.max_batch_size or len(queue.batches) > 1
        if not full and now < first.opened + timeout:
            return None
        queue.batches.popleft()
        self._depth(queue, -len(first.tasks))
        self._forget_if_empty(servable, queue)
        return first

    def _wait_seconds(self, queue: _Queue, task: _Task, now: float) -> float | None:
        """Until the task's deadline or its queue's first batch times out (None: a notify)."""
        times = []
        if task.deadline is not None:
            times.append(task.deadline)
        if queue.batches and self._running < self.parameters.num_batch_threads:
            times.append(queue.batches[0].opened + self.parameters.batch_timeout_micros / 1e6)
        return max(min(times) - now, 0.0) if times else None

    def _withdraw(self, servable: Servable, queue: _Queue, task: _Task) -> bool:
        """Take a queued task out of its batch; False when a run already has it."""
        for batch in queue.batches:
            if task in batch.tasks:
                batch.tasks.remove(task)
                batch.rows -= task.rows
                if not batch.tasks:
                    queue.batches.remove(batch)
                self._depth(queue, -1)
                self._forget_if_empty(servable, queue)
                return True
        return False

    def _forget_if_empty(self, servable: Servable, queue: _Queue) -> None:
        if queue.batches:
            return
        queues = self._queues.get(servable, {})
        if queues.get(queue.key) is queue:
            del queues[queue.key]
        if not queues:
            self._queues.pop(servable, None)

    def _depth(self, queue: _Queue, change: int) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.labels(queue.model, queue.signature).inc(change)

    # -- outside the lock ---------------------------------------------------------------------

    def _process(self, servable: Servable, queue: _Queue, batch: _Batch) -> None:
        """Run a batch once and hand each task its rows (or mark it to run alone)."""
        now = time.monotonic()
        live = []
        for task in batch.tasks:
            if task.deadline is not None and task.deadline <= now:
                task.error = _deadline_error("deadline expired while waiting in the batching queue")
            else:
                live.append(task)
        if not live:
            return
        rows = sum(task.rows for task in live)
        size = self.parameters.padded_size(rows)
        deadlines = [task.deadline for task in live]
        deadline = None if None in deadlines else max(deadlines)
        if self._metrics is not None:
            self._metrics.batch_size.labels(queue.model, queue.signature).observe(rows)
        merged = merge(
            [task.inputs for task in live], size, self.parameters.pad_variable_length_inputs
        )
        exact = len(live) == 1 and size == rows  # no other rows: its answer as is
        try:
            budget = timeout_ms(deadline)
            outputs = servable.run(queue.signature, merged, queue.output_filter, budget)
        except Exception as error:  # noqa: BLE001 - handed to the callers
            if exact:
                live[0].error = error
            else:
                for task in live:
                    task.alone = True
            return
        if exact:
            live[0].outputs = outputs
            return
        parts = split(outputs, [task.rows for task in live], size)
        if parts is None:
            log.warning(
                "signature '%s' of %s version %d has outputs without a batch dimension; its "
                "requests run alone from now on",
                queue.signature,
                servable.name,
                servable.version,
            )
            with self._lock:
                self._unsplittable.setdefault(servable, set()).add(queue.signature)
            for task in live:
                task.alone = True
            return
        for task, part in zip(live, parts, strict=True):
            task.outputs = part
