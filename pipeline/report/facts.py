"""What a root recorded: versions, gate decisions, data statistics, lineage, schedules, moves."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from pipeline import status as st

GATE_TYPES = {  # artifact type -> the gate it records
    "ModelBlessing": "evaluation",
    "InfraBlessing": "serving validation",
    "ExampleAnomalies": "data (anomalies and drift)",
}
# ExampleGen bookkeeping properties that are not data statistics.
NOT_STATISTICS = {"tfx_version", "state", "is_external", "payload_format", "input_fingerprint",
                  "span", "version", "file_format"}
HISTORY_SHOWN = 20  # latest schedule records per entry


@dataclasses.dataclass(frozen=True)
class Gate:
    """One gate decision of a pipeline run."""

    pipeline: str
    run: str
    at: str
    gate: str
    passed: bool | None  # None: no decision recorded
    reasons: list[str]


@dataclasses.dataclass(frozen=True)
class DataSet:
    """One ExampleGen output: where it came from and its statistics."""

    pipeline: str
    id: int
    at: str
    uri: str
    statistics: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ScheduleRun:
    entry: str
    status: str
    trigger: str
    at: str
    detail: str


@dataclasses.dataclass
class Facts:
    """Everything the report shows, without samples and plots."""

    root: str
    versions: list[st.VersionStatus]
    gates: list[Gate]
    data: list[DataSet]
    moves: list[Any]  # pipeline.promotion.LabelMove
    schedule: list[ScheduleRun]
    examples_uri: dict[int, str]  # ExampleGen artifact id -> uri (lineage)

    @property
    def models(self) -> list[str]:
        return sorted({v.model for v in self.versions})


def _run_of(store: Any, artifact: Any, types: dict[int, str]) -> str:
    execution = st.producer(store, artifact.id)
    if execution is None:
        return ""
    for context in store.get_contexts_by_execution(execution):
        if types.get(context.type_id) == "pipeline_run":
            return context.name
    return ""


def _anomaly_reasons(artifact: Any) -> list[str]:
    from components.data_validation import anomaly_lines

    splits = json.loads(artifact.properties["split_names"].string_value or "[]")
    try:
        return anomaly_lines(artifact.uri, splits)
    except Exception as error:  # noqa: BLE001 (a removed or unreadable artifact folder)
        return [f"could not read the anomalies at {artifact.uri}: {st.first_line(error)}"]


def _gate(store: Any, pipeline: str, artifact: Any, type_name: str, types: dict) -> Gate:
    props = st.properties(artifact)
    if type_name == "ExampleAnomalies":
        reasons = _anomaly_reasons(artifact)
        passed: bool | None = not reasons
        reasons = reasons or ["no anomalies"]
    else:
        blessed = props.get("blessed")
        passed = None if blessed is None else bool(blessed)
        reasons = [str(props.get("blessing_message") or "no message recorded")]
    return Gate(pipeline, _run_of(store, artifact, types), st.utc(artifact.create_time_since_epoch),
                GATE_TYPES[type_name], passed, reasons)


def _pipelines(store: Any) -> list[Any]:
    types = {t.name: t.id for t in store.get_context_types()}
    if "pipeline" not in types:
        return []
    return sorted(store.get_contexts_by_type("pipeline"), key=lambda c: c.name)


def gates_and_data(store: Any) -> tuple[list[Gate], list[DataSet], dict[int, str]]:
    """Every gate decision and every ExampleGen output, by pipeline, oldest first."""
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    context_types = {t.id: t.name for t in store.get_context_types()}
    gates, data, uris = [], [], {}
    for pipeline in _pipelines(store):
        for artifact in sorted(store.get_artifacts_by_context(pipeline.id), key=lambda a: a.id):
            type_name = type_names.get(artifact.type_id, "")
            if type_name in GATE_TYPES:
                gates.append(_gate(store, pipeline.name, artifact, type_name, context_types))
            elif type_name == "Examples" and st.raw_examples(store, artifact).id == artifact.id:
                statistics = {k: v for k, v in st.properties(artifact).items()
                              if k not in NOT_STATISTICS}
                uris[artifact.id] = artifact.uri
                data.append(DataSet(pipeline.name, artifact.id,
                                    st.utc(artifact.create_time_since_epoch), artifact.uri,
                                    statistics))
    return gates, data, uris


def schedule_history(root: str) -> list[ScheduleRun]:
    """The latest records of every schedule entry under `<root>/schedules/` (local roots)."""
    from pipeline.schedule import ScheduleError, Schedules

    if st.is_url(root):
        return []
    schedules = Schedules(root)
    if not os.path.isdir(schedules.folder):
        return []
    runs = []
    try:
        names = sorted({p.stem for p in schedules.folder.glob("*.jsonl")})
        for name in names:
            for record in schedules.history(name)[-HISTORY_SHOWN:]:
                runs.append(ScheduleRun(name, record.status, record.trigger,
                                        record.end or record.at, record.detail))
    except ScheduleError as error:
        runs.append(ScheduleRun("(damaged)", "unreadable", "", "", str(error)))
    return runs


def gather(root: str, server: str | None = None, metadata: st.MetadataSource | None = None,
           **client_options: Any) -> Facts:
    """The facts of ``root``; RootError when it (or its store) cannot be read."""
    versions = st.model_status(root, server, metadata, **client_options)
    store = st.open_store(root, metadata)
    gates: list[Gate] = []
    data: list[DataSet] = []
    uris: dict[int, str] = {}
    if store is not None:
        with st.reading(root, metadata):
            gates, data, uris = gates_and_data(store)
    moves = st.label_moves(root, metadata)
    return Facts(root, versions, gates, data, moves, schedule_history(root), uris)
