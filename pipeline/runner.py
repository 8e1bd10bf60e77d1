"""Running pipelines: the layout under `--root`, LocalDagRunner with progress lines, a run
summary read back from ML Metadata (the Kubeflow compile path: `pipeline.kubeflow`).

Layout of a root folder (shared by every model's pipeline):
    <root>/metadata.sqlite              ML Metadata store (sqlite)
    <root>/pipelines/<pipeline name>/   pipeline root: every component's artifacts
    <root>/serving/<model name>/<ver>/  pushed SavedModels, the model server's base paths

TFX is imported inside the functions: `import tfx` takes tens of seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

DEFAULT_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
BEAM_ARGS_EXAMPLE = "--direct_running_mode=multi_processing --direct_num_workers=2"
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What `genpipe run MODEL` was asked for (`pipeline.factory.build_pipeline` takes these).

    `beam_pipeline_args` go to every Beam-powered component (`--beam_pipeline_args`); the
    default runs Beam's DirectRunner in memory, in this process."""

    profile: str = "demo"
    root: str = "runs"
    source: str = "offline"
    enable_cache: bool = True
    beam_pipeline_args: tuple[str, ...] = DEFAULT_BEAM_ARGS
    style: str | None = None  # fast-style's --style
    accept_drift: bool = False  # --accept-drift: no drift comparison (the run may pass)


def parse_beam_args(values: list[str] | None) -> tuple[str, ...]:
    """The Beam options of `--beam_pipeline_args` (each value split like a shell would;
    DEFAULT_BEAM_ARGS when none is given). ValueError unless every one is `--name[=value]`."""
    if values is None:
        return DEFAULT_BEAM_ARGS
    try:
        args = [arg for value in values for arg in shlex.split(value)]
    except ValueError as error:
        raise ValueError(f"--beam_pipeline_args {values}: {error}") from None
    bad = [arg for arg in args if not arg.startswith("--")]
    if bad or not args:
        raise ValueError(f"--beam_pipeline_args {' '.join(bad) or repr('')}: Beam options look "
                         f"like --name=value, e.g. '{BEAM_ARGS_EXAMPLE}'")
    return tuple(args)


@dataclasses.dataclass(frozen=True)
class RootLayout:
    """Where metadata, pipeline roots and served models live under one root folder."""

    root: str

    @classmethod
    def for_run(cls, root: str, for_local_run: bool) -> RootLayout:
        """The layout of a run: local runs use the absolute root, so the artifact URIs recorded
        in ML Metadata (and with them the cache) work from any working directory; they refuse
        a URL root (`gs://...`), which would become a local folder. Compiled specs keep it."""
        if not for_local_run:
            return cls(root)
        scheme = URL_SCHEME.match(root)
        if scheme:
            raise ValueError(
                f"--root {root!r} is a {scheme.group(0)} URL, and a local run writes only to a "
                "local folder; give a folder path, or compile for Kubeflow with --compile-only "
                "FILE.yaml --image IMAGE (see docs/kubeflow.md)")
        return cls(os.path.abspath(root))

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.root, "metadata.sqlite")

    def pipeline_root(self, pipeline_name: str) -> str:
        return os.path.join(self.root, "pipelines", pipeline_name)

    def serving_dir(self, model_name: str) -> str:
        return os.path.join(self.root, "serving", model_name)

    def metadata_config(self) -> Any:
        """The sqlite ML Metadata connection config (a proto; creating it touches no file)."""
        from tfx.orchestration import metadata

        return metadata.sqlite_metadata_connection_config(self.metadata_path)


class ProgressLog(logging.Handler):
    """Prints a line when a component starts and when it ends (with its time, and whether it
    was served from cache), from the launcher's own log records. Installed on TFX's (absl)
    logger at INFO level with propagation off, it passes warnings and errors on to the root
    logger, so the run is not flooded by TFX's INFO records."""

    def __init__(self, out: TextIO):
        super().__init__(level=logging.INFO)
        self.out = out
        self.started = time.monotonic()
        self.current: str | None = None
        self.current_started = 0.0
        self.how = "done"  # how the current component ended: done or cached
        self.seconds: dict[str, float] = {}

    def line(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{int(elapsed // 60):3d}:{elapsed % 60:04.1f}] {text}", file=self.out, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        message, args = record.msg, record.args
        if record.levelno >= logging.WARNING:
            logging.getLogger().handle(record)
            return
        if message == "Component %s is running." and args:
            self.current, self.current_started, self.how = args[0], time.monotonic(), "done"
            self.line(f"{self.current} ...")
        elif isinstance(message, str) and message.startswith("A cached execution"):
            self.how = "cached"
        elif message == "Component %s is finished." and args:
            seconds = time.monotonic() - self.current_started
            self.seconds[args[0]] = seconds
            self.line(f"{args[0]} {self.how} in {seconds:.1f} s")
            self.current = None


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """One output artifact of a component execution, as recorded in ML Metadata."""

    id: int
    type_name: str
    uri: str
    properties: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ComponentRun:
    """A component's execution in one pipeline run: `state` is COMPLETE, CACHED, FAILED, ..."""

    node_id: str
    state: str
    outputs: Mapping[str, tuple[ArtifactInfo, ...]]
    seconds: float | None = None  # wall time, when the run was watched by `run_local`


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The executions of one pipeline run, by component id."""

    pipeline_name: str
    run_id: str
    components: Mapping[str, ComponentRun]
    seconds: float | None = None

    def output(self, node_id: str, key: str) -> ArtifactInfo:
        """The single artifact a component wrote under `key` in this run."""
        if node_id not in self.components:
            raise KeyError(f"no component {node_id!r} in run {self.run_id}; "
                           f"components: {sorted(self.components)}")
        artifacts = self.components[node_id].outputs.get(key, ())
        if len(artifacts) != 1:
            raise KeyError(f"{node_id} has {len(artifacts)} artifacts under {key!r}")
        return artifacts[0]

    def counts_line(self) -> str:
        """`N components: E executed, C from cache`."""
        states = [run.state for run in self.components.values()]
        return (f"{len(states)} components: {states.count('COMPLETE')} executed, "
                f"{states.count('CACHED')} from cache")


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "proto_value" or kind == "struct_value":
        return value
    return getattr(value, kind) if kind else None


def _artifact_info(artifact: Any, type_name: str) -> ArtifactInfo:
    properties = {name: _value(v) for name, v in artifact.custom_properties.items()}
    return ArtifactInfo(artifact.id, type_name, artifact.uri, properties)


def latest_run(metadata_config: Any, pipeline_name: str) -> RunSummary:
    """The executions, states and outputs of the latest run of `pipeline_name`."""
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    store = mlmd.MetadataStore(metadata_config)
    pipeline_context = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_context is None:
        raise LookupError(f"pipeline {pipeline_name!r} has never run with this metadata store")
    pipeline_executions = {e.id for e in store.get_executions_by_context(pipeline_context.id)}
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id, reverse=True)
    for run in runs:
        executions = store.get_executions_by_context(run.id)
        if any(e.id in pipeline_executions for e in executions):
            break
    else:
        raise LookupError(f"pipeline {pipeline_name!r} has no recorded run")

    node_prefix = f"{pipeline_name}."
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    components = {}
    for execution in executions:
        node_id = next(
            c.name[len(node_prefix):] for c in store.get_contexts_by_execution(execution.id)
            if c.name.startswith(node_prefix)
        )
        outputs: dict[str, list[ArtifactInfo]] = {}
        events = [
            e for e in store.get_events_by_execution_ids([execution.id])
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
        ]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        for event in events:
            artifact = artifacts[event.artifact_id]
            key = event.path.steps[0].key if event.path.steps else ""
            info = _artifact_info(artifact, type_names[artifact.type_id])
            outputs.setdefault(key, []).append(info)
        state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        components[node_id] = ComponentRun(
            node_id, state, {key: tuple(value) for key, value in outputs.items()}
        )
    return RunSummary(pipeline_name, run.name, components)


def _compiled(pipeline: Any) -> Any:
    """The pipeline's IR as `LocalDagRunner.run` compiles it, with the cache off for the
    baseline lookups (`stages.UNCACHED`: a cached lookup would keep an old baseline)."""
    from tfx.orchestration.portable import tfx_runner

    from pipeline.stages import UNCACHED

    ir = tfx_runner._make_pipeline_proto(pipeline)  # noqa: SLF001 (what `run` compiles)
    for node in ir.nodes:
        if node.pipeline_node.node_info.id in UNCACHED:
            node.pipeline_node.execution_options.caching_options.enable_cache = False
    return ir


def run_local(pipeline: Any, out: TextIO | None = None) -> RunSummary:
    """Runs `pipeline` with LocalDagRunner, printing component progress to `out` (stdout).

    Raises the failing component's error (after a line naming the component).
    """
    from absl import logging as absl_logging
    from tfx import v1 as tfx

    out = out or sys.stdout
    logger = absl_logging.get_absl_logger()
    progress = ProgressLog(out)
    previous = absl_logging.get_verbosity(), logger.propagate
    logger.addHandler(progress)
    # Through absl's verbosity flag: TensorFlow resets the logger to that flag while saving.
    absl_logging.set_verbosity(absl_logging.INFO)
    logger.propagate = False
    name = pipeline.pipeline_info.pipeline_name
    print(f"genpipe: running pipeline {name} ({len(pipeline.components)} components) "
          f"with LocalDagRunner; artifacts under {pipeline.pipeline_info.pipeline_root}",
          file=out, flush=True)
    try:
        tfx.orchestration.LocalDagRunner().run_with_ir(_compiled(pipeline))
    except Exception:
        if progress.current is not None:
            progress.line(f"{progress.current} FAILED")
        raise
    finally:
        logger.removeHandler(progress)
        absl_logging.set_verbosity(previous[0])
        logger.propagate = previous[1]
    summary = latest_run(pipeline.metadata_connection_config, name)
    components = {
        node_id: dataclasses.replace(run, seconds=progress.seconds.get(node_id))
        for node_id, run in summary.components.items()
    }
    return dataclasses.replace(
        summary, components=components, seconds=time.monotonic() - progress.started
    )
