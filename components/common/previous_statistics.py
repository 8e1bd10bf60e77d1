"""The statistics of the last run of a pipeline that passed the data gate, found in ML Metadata.

`PreviousStatistics` is the drift baseline of every pipeline, local (LocalDagRunner, asking the
root's own sqlite store) or compiled for Kubeflow (whose open-source backend runs no resolver,
asking `baseline_metadata`): one rule for both. It runs after StatisticsGen, is never served
from cache (`pipeline.stages.UNCACHED`) and outputs an ExampleStatistics for
DistributionValidator's `baseline_statistics`:

- a copy of the newest ExampleStatistics of a run of the pipeline whose data passed the gate
  (the run's `gate` task completed, or came from the cache), for the splits this run has. A
  rerun of unchanged data may find its own (cached) statistics, from the run that passed; or
- when there is none (first run, every earlier run stopped at the gate, no common split) or the
  store cannot be reached: a copy of this run's own statistics. DistributionValidator then finds
  no divergence, and the gate says the drift was not checked.

Only runs that passed the gate count, so a drifted source keeps being stopped until it is fixed
or a run without the drift check (`--accept-drift`) passes the gate and becomes the baseline.
The output carries `previous_statistics_lookup` = 1 (a later lookup never takes the copy),
`baseline_found` and `baseline_message`. The store address is as for
`components.common.last_blessed` (`grpc://HOST:PORT`, `sqlite://PATH`, or empty: no lookup);
runs are TFX's `pipeline_run` contexts or Kubeflow v2's `system.PipelineRun` contexts.
"""

# No `from __future__ import annotations`: TFX reads the component's annotations as types.
import json
import os
from collections.abc import Iterable
from typing import Any

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import ExampleStatistics
from tfx.utils import io_utils

from components.common.evaluation import set_properties
from components.common.last_blessed import connection_config, latest, pipeline_contexts
from components.data_validation import BASELINE_FOUND, SPLIT_FOLDER

STATISTICS_TYPES = ("ExampleStatistics", "tfx.ExampleStatistics")  # TFX's, Kubeflow's title
RUN_CONTEXT_TYPES = ("pipeline_run", "system.PipelineRun")  # TFX's, Kubeflow v2's
NODE_CONTEXT_TYPE = "node"  # TFX: one per component, named "<pipeline>.<component id>"
TASK_NAME = "task_name"  # Kubeflow v2: the execution's task (component id)
LOOKUP = "previous_statistics_lookup"
FOUND, MESSAGE = BASELINE_FOUND, "baseline_message"
REPORT_FILE = "previous_statistics.json"
_Execution = metadata_store_pb2.Execution
_Artifact = metadata_store_pb2.Artifact
PASSED_STATES = (_Execution.COMPLETE, _Execution.CACHED)
USABLE_STATES = (_Artifact.UNKNOWN, _Artifact.LIVE)  # not pending, deleted or abandoned


def _gate_executions(store: Any, pipeline_name: str, gate: str) -> set[int]:
    """Ids of TFX executions of the `gate` component (Kubeflow's are told by `task_name`)."""
    from ml_metadata import errors

    try:
        node = store.get_context_by_type_and_name(NODE_CONTEXT_TYPE, f"{pipeline_name}.{gate}")
    except errors.NotFoundError:  # the store never held a TFX node
        return set()
    return set() if node is None else {e.id for e in store.get_executions_by_context(node.id)}


def _passed(store: Any, run_id: int, gate: str, tfx_gates: set[int]) -> bool:
    """Whether run context `run_id` holds a completed (or cached) execution of `gate`."""
    for execution in store.get_executions_by_context(run_id):
        task = execution.custom_properties.get(TASK_NAME)
        is_gate = execution.id in tfx_gates or (task is not None and task.string_value == gate)
        if is_gate and execution.last_known_state in PASSED_STATES:
            return True
    return False


def is_run_statistics(artifact: Any, type_name: str | None) -> bool:
    """An ExampleStatistics a StatisticsGen wrote (not one of this component's copies)."""
    return (type_name in STATISTICS_TYPES and artifact.state in USABLE_STATES
            and LOOKUP not in artifact.custom_properties)


def find_previous_statistics(store: Any, pipeline_name: str, gate: str) -> Any | None:
    """The newest ExampleStatistics (an MLMD Artifact) of a run of `pipeline_name` whose `gate`
    passed; None when there is none. (The running run's gate has not run yet.)"""
    types = {t.id: t.name for t in store.get_artifact_types()}
    run_types = {t.id for t in store.get_context_types() if t.name in RUN_CONTEXT_TYPES}
    tfx_gates = _gate_executions(store, pipeline_name, gate)
    verdicts: dict[int, bool] = {}  # run context id -> passed
    found = {}
    for context in pipeline_contexts(store, pipeline_name):
        for artifact in store.get_artifacts_by_context(context.id):
            if artifact.id in found or not is_run_statistics(artifact,
                                                             types.get(artifact.type_id)):
                continue
            runs = [c.id for c in store.get_contexts_by_artifact(artifact.id)
                    if c.type_id in run_types]
            for run in runs:
                if run not in verdicts:
                    verdicts[run] = _passed(store, run, gate, tfx_gates)
            if any(verdicts[run] for run in runs):
                found[artifact.id] = artifact
    return latest(found.values())


def recorded_splits(artifact: Any) -> list[str]:
    """The split names of an MLMD ExampleStatistics: its `split_names` (a property in TFX's
    store, a custom property in Kubeflow's), else the `Split-*` folders under its uri."""
    for properties in (artifact.properties, artifact.custom_properties):
        if "split_names" in properties and properties["split_names"].string_value:
            return artifact_utils.decode_split_names(properties["split_names"].string_value)
    prefix = SPLIT_FOLDER.format("")
    if not fileio.isdir(artifact.uri):
        return []
    return sorted(name.rstrip("/")[len(prefix):] for name in fileio.listdir(artifact.uri)
                  if name.startswith(prefix))


def lookup(address: str, pipeline_name: str, gate: str) -> tuple[Any | None, str]:
    """(the previous statistics' MLMD artifact or None, a sentence saying what was found)."""
    if not address:
        return None, "no metadata store given: no baseline"
    config = connection_config(address)
    try:
        import ml_metadata as mlmd

        found = find_previous_statistics(mlmd.MetadataStore(config), pipeline_name, gate)
    except Exception as error:  # noqa: BLE001 (an unreachable store means no baseline)
        return None, f"metadata store {address} unusable ({type(error).__name__}: {error}); " \
                     "no baseline"
    if found is None:
        return None, f"no earlier run of {pipeline_name} passed {gate} in {address}: no baseline"
    return found, f"previous statistics: ExampleStatistics #{found.id} of {pipeline_name} " \
                  f"({found.uri}) in {address}"


def _copy_splits(source_uri: str, splits: Iterable[str], destination_uri: str) -> None:
    for split in splits:
        io_utils.copy_dir(os.path.join(source_uri, SPLIT_FOLDER.format(split)),
                          os.path.join(destination_uri, SPLIT_FOLDER.format(split)))


@tfx.dsl.components.component
def PreviousStatistics(  # noqa: N802 (TFX component names are classes)
    statistics: tfx.dsl.components.InputArtifact[ExampleStatistics],
    baseline: tfx.dsl.components.OutputArtifact[ExampleStatistics],
    pipeline_name: tfx.dsl.components.Parameter[str],
    gate: tfx.dsl.components.Parameter[str],
    metadata: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Outputs the statistics of the newest earlier run of `pipeline_name` that passed `gate`,
    found in the `metadata` store, or a copy of `statistics` (no baseline; module docstring)."""
    splits = artifact_utils.decode_split_names(statistics.split_names)
    found, message = lookup(metadata, pipeline_name, gate)
    common = []
    if found is not None:
        common = [split for split in splits if split in recorded_splits(found)
                  and fileio.isdir(os.path.join(found.uri, SPLIT_FOLDER.format(split)))]
        if not common:
            message = f"{message} holds none of this run's splits {splits}: no baseline"
    source = found.uri if common else statistics.uri
    fileio.makedirs(baseline.uri)
    _copy_splits(source, common or splits, baseline.uri)
    baseline.split_names = artifact_utils.encode_split_names(common or splits)
    set_properties(baseline, {LOOKUP: True, FOUND: bool(common), MESSAGE: message})
    if common:
        set_properties(baseline, {"baseline_statistics_id": found.id,
                                  "baseline_statistics_uri": found.uri})
    with fileio.open(os.path.join(baseline.uri, REPORT_FILE), "w") as handle:
        handle.write(json.dumps({"found": bool(common), "message": message,
                                 "splits": common or splits}) + "\n")
    print(f"  {message}", flush=True)
