"""The tf.distribute strategy a Trainer builds its model under, its precision, its input
pipeline, and where each worker writes.

The strategy, first match (`strategy_kind`):
1. `given`: one already in scope when `run_fn` is called (a caller entered `strategy.scope()`;
   TFX 1.16's `FnArgs` carries no strategy, its distributed runners set `TF_CONFIG`);
2. `multi_worker`: `TF_CONFIG` names a cluster of 2+ workers (the chief counts):
   MultiWorkerMirroredStrategy, one replica per worker;
3. `mirrored`: 2+ visible GPUs: MirroredStrategy over them;
4. `default`: one device, as without tf.distribute.

The profile's `batch_size` is the global batch (examples per optimizer step): replicas get equal
shares of it, so the learning dynamics do not change with the number of workers. Every worker
writes the same outputs; only the chief's reach the Trainer's artifacts, the others go to a
temporary folder that is removed (the MultiWorkerMirroredStrategy saving pattern).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from components.common.settings import PRECISIONS

TF_CONFIG = "TF_CONFIG"
WORKER_JOBS = ("chief", "worker")  # the jobs that train; "evaluator" runs apart, "ps" is refused
POLICIES = {"gpu": "mixed_float16", "cpu": "mixed_bfloat16"}  # of precision "mixed", by device


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This task's place in the `TF_CONFIG` cluster."""

    workers: int  # tasks that train: chief + workers
    task_type: str
    task_index: int
    has_chief_job: bool

    @property
    def is_chief(self) -> bool:
        """The `chief` task, or worker 0 when the cluster has no chief job (TF's rule)."""
        if self.has_chief_job:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def parse_tf_config(text: str | None) -> Cluster | None:
    """The cluster of a `TF_CONFIG` value, or None when it names no cluster.

    Raises ValueError naming `TF_CONFIG` and what is allowed when it is not usable.
    """
    if not text or not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{TF_CONFIG} is not JSON ({error.msg}); expected "
                         '{"cluster": {"worker": ["host:port", ...]}, '
                         '"task": {"type": "worker", "index": 0}}') from error
    cluster = config.get("cluster") or {}
    if not cluster:
        return None
    if "ps" in cluster:
        raise ValueError(f"{TF_CONFIG} has a 'ps' job: parameter-server training is not "
                         f"supported; allowed jobs: {', '.join(WORKER_JOBS)}, evaluator")
    task = config.get("task") or {}
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in WORKER_JOBS:
        raise ValueError(f"{TF_CONFIG} task type {task_type!r} does not train; allowed: "
                         f"{', '.join(WORKER_JOBS)}")
    hosts = cluster.get(task_type) or []
    if not isinstance(task_index, int) or not 0 <= task_index < len(hosts):
        raise ValueError(f"{TF_CONFIG} task index {task_index!r} is not one of the "
                         f"{len(hosts)} {task_type!r} hosts (0..{len(hosts) - 1})")
    workers = sum(len(cluster.get(job) or []) for job in WORKER_JOBS)
    return Cluster(workers, task_type, task_index, has_chief_job=bool(cluster.get("chief")))


def strategy_kind(in_scope: bool, cluster: Cluster | None, gpus: int) -> str:
    """Which strategy to build: `given`, `multi_worker`, `mirrored` or `default`."""
    if in_scope:
        return "given"
    if cluster is not None and cluster.workers > 1:
        return "multi_worker"
    if gpus > 1:
        return "mirrored"
    return "default"


@functools.cache
def _built(kind: str) -> tf.distribute.Strategy:
    """One strategy per kind and process: a second MultiWorkerMirroredStrategy would try to
    start the same collective server again."""
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def pick_strategy() -> tf.distribute.Strategy:
    """The strategy a Trainer builds under (module docstring). Call it before any other
    TensorFlow work of `run_fn`: MultiWorkerMirroredStrategy must set up its collectives first."""
    in_scope = tf.distribute.has_strategy()
    cluster = parse_tf_config(os.environ.get(TF_CONFIG))
    kind = strategy_kind(in_scope, cluster, len(tf.config.list_physical_devices("GPU")))
    strategy = tf.distribute.get_strategy() if kind == "given" else _built(kind)
    logging.info("Training under %s (%s, %d replicas)", type(strategy).__name__, kind,
                 strategy.num_replicas_in_sync)
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the Trainer's outputs: true unless the strategy spans a
    cluster in which this task is not the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    jobs = resolver.cluster_spec().as_dict()
    cluster = Cluster(
        workers=sum(len(jobs.get(job, ())) for job in WORKER_JOBS),
        task_type=resolver.task_type,
        task_index=int(resolver.task_id or 0),
        has_chief_job=bool(jobs.get("chief")),
    )
    return cluster.is_chief


def policy_name(precision: str, on_gpu: bool) -> str:
    """The Keras dtype policy of a `precision` (components.common.settings.PRECISIONS)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is unknown; allowed: {', '.join(PRECISIONS)}")
    if precision == "float32":
        return "float32"
    return POLICIES["gpu" if on_gpu else "cpu"]


@contextlib.contextmanager
def building(strategy: tf.distribute.Strategy, precision: str) -> Iterator[str]:
    """Scope in which models and optimizers are built: the strategy's, with the Keras dtype
    policy of `precision` (restored on exit, since Trainers share their process with other
    components). Yields the policy's name."""
    name = policy_name(precision, on_gpu=bool(tf.config.list_logical_devices("GPU")))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        with strategy.scope():
            yield name
    finally:
        keras.config.set_dtype_policy(previous)


def float32_copy(build: Callable[[], keras.Model], trained: keras.Model) -> keras.Model:
    """`build()` under the float32 policy, holding `trained`'s weights: what a Trainer saves and
    exports (plain float32 variables whatever the strategy or precision of training)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = build()
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights(trained.get_weights())
    return model


def fit_across_workers(model: keras.Model, strategy: tf.distribute.Strategy) -> keras.Model:
    """`model`, made fit for Keras 3.12's `fit` under MultiWorkerMirroredStrategy; elsewhere
    (every replica in this process) it is returned as it is.

    Two Keras bugs are worked around on the instance. Keras reduces each step's results across
    workers with `strategy.reduce(MEAN, value, axis=0)`, which fails on the scalar results every
    train_step returns ("Invalid reduction dimension 0 for input with 0 dimensions",
    tensorflow#72388): the results leave as [1] vectors, which that reduction turns back into
    scalars (the mean over workers). Before the first step Keras also averages a whole input
    batch across workers only to read its shapes and dtypes, which fails on the LM's int64
    token ids: this worker's own batch gives the same shapes and dtypes.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or (
        strategy.num_replicas_in_sync <= len(strategy.extended.worker_devices)
    ):
        return model  # every replica is in this process
    train_step, test_step = model.train_step, model.test_step

    def vectors(results: dict[str, Any]) -> dict[str, Any]:
        return {name: tf.reshape(value, [-1]) for name, value in results.items()}

    def local(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build(iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local, next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model.train_step = lambda data: vectors(train_step(data))
    model.test_step = lambda data: vectors(test_step(data))
    model._maybe_symbolic_build = symbolic_build
    return model


def distributable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` (batched by the global batch) with the auto-shard policy set to DATA: every
    worker reads all files and keeps its share of each batch. Per-file sharding would leave
    workers idle, since Transform writes one file per split at genpipe's sizes, and would
    break the image datasets' asserted record count."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@contextlib.contextmanager
def output_dir(path: str, chief: bool) -> Iterator[str]:
    """`path` on the chief; elsewhere a temporary folder, removed on exit."""
    if chief:
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="genpipe-worker-")
    try:
        yield os.path.join(scratch, os.path.basename(path.rstrip("/")) or "out")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def describe(strategy: tf.distribute.Strategy) -> dict[str, Any]:
    """What a Trainer logs about how it trained."""
    return {"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
            "chief": is_chief(strategy)}
