"""Blessing a trained model and recording the evaluation, shared by the evaluation components.

A model is blessed when every `Check` passes: typically the held-out metric beats a profile
threshold, and is no worse than `(1 + tolerance)` x the metric stored on the latest blessing
(resolved by `LatestBlessedModelStrategy`), when there is one. The ModelBlessing carries
`blessed` and `current_model_id` (the keys that strategy reads) plus the metric, so the next run
finds its baseline there. A cached re-run scores the same model again (it is then its own
baseline); `components.push` does not push a model identical to the latest version twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from tfx.dsl.io import fileio

METRICS_FILE = "metrics.json"
BLESSED = "blessed"
CURRENT_MODEL_ID = "current_model_id"  # the keys LatestBlessedModelStrategy reads
BLESSING_MESSAGE = "blessing_message"


@dataclasses.dataclass(frozen=True)
class Check:
    """One blessing criterion: whether it held, and a sentence saying what was compared."""

    passed: bool
    text: str


def at_most(
    name: str, value: float, limit: float, what: str = "threshold", fmt: str = ".4g"
) -> Check:
    """`value <= limit` (lower is better); `fmt` formats both numbers."""
    return Check(value <= limit, f"{name} {value:{fmt}} <= {what} {limit:{fmt}}")


def no_worse_than_baseline(
    name: str, value: float, baseline: float | None, tolerance: float, fmt: str = ".4g"
) -> Check | None:
    """`value <= (1 + tolerance) x |baseline|` above the baseline (lower is better); None
    without a baseline. The margin uses |baseline| so it also works for values near 0; `fmt`
    formats the numbers."""
    if baseline is None:
        return None
    limit = baseline + tolerance * abs(baseline)
    return Check(
        value <= limit,
        f"{name} {value:{fmt}} <= last blessed {baseline:{fmt}} + {tolerance:.0%} = {limit:{fmt}}",
    )


def decide(checks: Sequence[Check | None]) -> tuple[bool, str]:
    """(blessed, message): the message names every failed check, or every check when all pass."""
    checks = [check for check in checks if check is not None]
    failed = [check.text for check in checks if not check.passed]
    if failed:
        return False, "not blessed: failed " + "; ".join(failed)
    return True, "blessed: " + "; ".join(check.text for check in checks)


def baseline_metric(baseline_blessing: Any, metric: str) -> tuple[int | None, float | None]:
    """(model id, metric value) stored on the latest blessing, or (None, None) without one
    (no artifact, or the not-blessed placeholder of `components.common.last_blessed`)."""
    if baseline_blessing is None or baseline_blessing.get_int_custom_property(BLESSED) != 1:
        return None, None
    return (
        baseline_blessing.get_int_custom_property(CURRENT_MODEL_ID),
        baseline_blessing.get_float_custom_property(metric),
    )


def set_properties(artifact: Any, values: Mapping[str, Any]) -> None:
    """Ints (and bools) as int properties, floats as float properties, the rest as strings."""
    for name, value in values.items():
        if isinstance(value, int):  # bool too
            artifact.set_int_custom_property(name, int(value))
        elif isinstance(value, float):
            artifact.set_float_custom_property(name, value)
        elif value is not None:
            artifact.set_string_custom_property(name, str(value))


def record(
    *,
    evaluation: Any,
    blessing: Any,
    model: Any,
    metrics: Mapping[str, float | int],
    blessed: bool,
    message: str,
    report: Mapping[str, Any] = {},  # noqa: B006 (read only)
    blessing_metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Writes `metrics.json` (metrics + `report` + decision) into the ModelEvaluation, sets the
    metrics as properties of both artifacts (of the ModelBlessing: only `blessing_metrics`, when
    given), and marks the ModelBlessing (BLESSED/NOT_BLESSED file and properties). Returns the
    written report."""
    if blessing_metrics is not None:
        unknown = sorted(set(blessing_metrics) - set(metrics))
        if unknown:
            raise ValueError(f"blessing_metrics {unknown} are not among the metrics "
                             f"{sorted(metrics)}")
    on_blessing = {
        name: value for name, value in metrics.items()
        if blessing_metrics is None or name in blessing_metrics
    }
    written = {
        **metrics, **report, "model_id": model.id, BLESSED: blessed, BLESSING_MESSAGE: message,
    }
    fileio.makedirs(evaluation.uri)
    with fileio.open(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
        f.write(json.dumps(written, indent=2))
    set_properties(evaluation, {**metrics, BLESSED: blessed})
    set_properties(blessing, {
        **on_blessing,
        BLESSED: blessed,
        CURRENT_MODEL_ID: model.id,
        "current_model": model.uri,
        "baseline_model_id": report.get("baseline_model_id"),
        BLESSING_MESSAGE: message,
    })
    fileio.makedirs(blessing.uri)
    with fileio.open(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "w") as f:
        f.write(message + "\n")
    return written
