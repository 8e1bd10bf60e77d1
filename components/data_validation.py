"""The data gate before Transform: the run stops, naming every anomaly and every drifted feature.

TFX's ExampleValidator (the examples against the curated schema) and DistributionValidator (this
run's statistics against a baseline's, with drift comparators on the features that matter)
record what they find but let the pipeline go on; wire `AnomalyGate` after both and make the data
consumers depend on it (`transform.add_upstream_node(gate)`). The baseline is the output of
`components.common.previous_statistics.PreviousStatistics`; its `baseline_found` tells the gate
whether drift was checked at all.
"""

# No `from __future__ import annotations`: the @component decorator reads the real type hints.

import os
from collections.abc import Mapping

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.proto import distribution_validator_pb2
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import ExampleAnomalies, ExampleStatistics

from components.schemas import DriftLimit

ANOMALIES_FILE = "SchemaDiff.pb"  # what both validators write in each split (pair) folder
# The folder of one split: ExampleValidator writes Split-<split>, DistributionValidator
# SplitPair-<split>_<baseline split>.
SPLIT_FOLDER, SPLIT_PAIR_FOLDER = "Split-{}", "SplitPair-{}"
BASELINE_FOUND = "baseline_found"  # the drift baseline's property: 0 when there was none


class DataAnomaliesError(RuntimeError):
    """The examples do not match the schema, or drifted from the baseline's."""


def drift_config(
    thresholds: Mapping[str, float | DriftLimit],
) -> distribution_validator_pb2.DistributionValidatorConfig:
    """DistributionValidator's config: for each feature, the largest distance allowed between this
    run's distribution and the baseline's: a `DriftLimit`, or a number (the approximate
    Jensen-Shannon divergence of the two histograms, for a numeric feature)."""
    config = distribution_validator_pb2.DistributionValidatorConfig()
    for feature, limit in sorted(thresholds.items()):
        if not isinstance(limit, DriftLimit):
            limit = DriftLimit(float(limit))
        comparator = config.default_slice_config.feature.add()
        comparator.path.step.append(feature)
        getattr(comparator.distribution_comparator, limit.comparator).threshold = limit.threshold
    return config


def anomaly_lines(
    anomalies_uri: str, split_names: list[str], folder: str = SPLIT_FOLDER
) -> list[str]:
    """One line per anomaly: `<split>: feature '<name>': <description>`."""
    lines = []
    for split in split_names:
        path = os.path.join(anomalies_uri, folder.format(split), ANOMALIES_FILE)
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


def _splits(anomalies: ExampleAnomalies) -> list[str]:
    return artifact_utils.decode_split_names(anomalies.split_names)


@component
def AnomalyGate(  # noqa: N802 (component class)
    anomalies: InputArtifact[ExampleAnomalies],
    drift: InputArtifact[ExampleAnomalies] = None,  # DistributionValidator's, when it ran
    baseline: InputArtifact[ExampleStatistics] = None,  # what `drift` compared with
):
    """Fails the run with the list of anomalies and drifted features, if there are any."""
    problems = anomaly_lines(anomalies.uri, _splits(anomalies))
    drifted = anomaly_lines(drift.uri, _splits(drift), SPLIT_PAIR_FOLDER) if drift else []
    if problems or drifted:
        sections = []
        if problems:
            noun = "anomaly" if len(problems) == 1 else "anomalies"
            sections.append(f"ExampleValidator found {len(problems)} data {noun} (against the "
                            "schema):\n  " + "\n  ".join(problems))
        if drifted:
            sections.append(f"DistributionValidator found {len(drifted)} drifted "
                            f"feature{'' if len(drifted) == 1 else 's'} (against the statistics of "
                            "the last run that passed this gate; split pair "
                            "<this run>_<that run>):\n  "
                            + "\n  ".join(drifted))
        raise DataAnomaliesError(
            "\n".join(sections) + "\nThe run stops before Transform. Fix the source data, or, if "
            "the change is intended, update the schema (`genpipe schema update`) or run with "
            "--accept-drift."
        )
    if drift is None:
        checked = ""
    elif baseline is not None and not baseline.get_custom_property(BASELINE_FOUND):
        checked = "; no baseline (first run): drift not checked"
    else:
        checked = ", no drift"
    print(f"  no data anomalies{checked}", flush=True)
