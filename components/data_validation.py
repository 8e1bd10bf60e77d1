"""A gate after ExampleValidator: the run stops, naming every anomaly, when the data has any.

TFX's ExampleValidator records anomalies but lets the pipeline go on; wire this component after
it and make the data consumers depend on it (`transform.add_upstream_node(gate)`).
"""

# No `from __future__ import annotations`: the @component decorator reads the real type hints.

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import ExampleAnomalies

ANOMALIES_FILE = "SchemaDiff.pb"  # what ExampleValidator writes in each Split-<name> folder


class DataAnomaliesError(RuntimeError):
    """The examples do not match the schema."""


def anomaly_lines(anomalies_uri: str, split_names: list[str]) -> list[str]:
    """One line per anomaly: `<split>: feature '<name>': <description>`."""
    lines = []
    for split in split_names:
        path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
        with fileio.open(path, "rb") as f:
            anomalies = anomalies_pb2.Anomalies.FromString(f.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            lines.append(f"{split}: feature {feature!r}: {_describe(info)}")
        if anomalies.HasField("dataset_anomaly_info"):
            lines.append(f"{split}: dataset: {_describe(anomalies.dataset_anomaly_info)}")
    return lines


def _describe(info: anomalies_pb2.AnomalyInfo) -> str:
    reasons = "; ".join(
        f"{reason.short_description} ({reason.description})" for reason in info.reason
    )
    return reasons or info.description or info.short_description


@component
def AnomalyGate(anomalies: InputArtifact[ExampleAnomalies]):  # noqa: N802 (component class)
    """Fails the run with the list of anomalies, if ExampleValidator found any."""
    # Split-<name> folders are TFX's layout for split artifacts.
    lines = anomaly_lines(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))
    if lines:
        raise DataAnomaliesError(
            f"ExampleValidator found {len(lines)} data anomal{'y' if len(lines) == 1 else 'ies'}; "
            "the run stops before Transform:\n  " + "\n  ".join(lines)
            + "\nFix the source data, or update the schema if the change is intended."
        )
    print("  no data anomalies", flush=True)
