"""ExampleGen executors whose Beam counters end up on the Examples artifact.

A subclass of `CountingExampleGenExecutor` names its Beam metrics namespace and counters and
increments them while reading (`counter(namespace, name).inc()`). After the pipeline finishes,
every counter, plus `<split>_examples` for each output split, is stored as an int custom property
of the Examples artifact, so what the ingestion read, dropped and wrote is visible in ML Metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import apache_beam as beam
from absl import logging
from tfx import types
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.types import artifact_utils


def counter(namespace: str, name: str) -> beam.metrics.metric.Metrics.DelegatingCounter:
    """The Beam counter `name` of `namespace`."""
    return beam.metrics.Metrics.counter(namespace, name)


def _count_one(element: Any, namespace: str, name: str) -> None:
    counter(namespace, name).inc()


def counter_values(
    result: beam.runners.runner.PipelineResult, namespace: str, names: Iterable[str]
) -> dict[str, int]:
    """Committed (else attempted) values of the named counters; 0 for one that never fired."""
    values = {name: 0 for name in names}
    query = beam.metrics.MetricsFilter().with_namespace(namespace)
    for found in result.metrics().query(query)["counters"]:
        name = found.key.metric.name
        if name in values:
            committed = found.committed
            values[name] += committed if committed is not None else found.attempted
    return values


class CountingExampleGenExecutor(BaseExampleGenExecutor):
    """A `BaseExampleGenExecutor` that stores its Beam counters on the Examples artifact.

    Subclasses set `METRICS_NAMESPACE` and `COUNTERS`, implement
    `GetInputSourceToExamplePTransform`, may add string properties with `string_properties`,
    and may report or refuse the counts with `after_counting`.
    """

    METRICS_NAMESPACE: ClassVar[str] = ""
    COUNTERS: ClassVar[tuple[str, ...]] = ()

    def string_properties(self, exec_properties: dict[str, Any]) -> dict[str, str]:
        """Extra string custom properties of the Examples artifact (none by default)."""
        return {}

    def after_counting(self, counts: dict[str, int], exec_properties: dict[str, Any]) -> None:
        """Called with the stored counts (counters, then `<split>_examples`): may report them,
        or raise to fail the component (nothing by default)."""

    def GenerateExamplesByBeam(  # noqa: N802 (TFX API)
        self, pipeline: beam.Pipeline, exec_properties: dict[str, Any]
    ) -> dict[str, beam.PCollection]:
        splits = super().GenerateExamplesByBeam(pipeline, exec_properties)
        for name, examples in splits.items():
            _ = examples | f"Count[{name}]" >> beam.Map(
                _count_one, self.METRICS_NAMESPACE, f"{name}_examples"
            )
        return splits

    def _make_beam_pipeline(self) -> beam.Pipeline:
        # Kept so that Do can read the metrics of the finished pipeline (`Pipeline.result`).
        self._pipeline = super()._make_beam_pipeline()
        return self._pipeline

    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        super().Do(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        split_names = artifact_utils.decode_split_names(examples.split_names)
        names = (*self.COUNTERS, *(f"{split}_examples" for split in split_names))
        counts = counter_values(self._pipeline.result, self.METRICS_NAMESPACE, names)
        for name, value in counts.items():
            examples.set_int_custom_property(name, value)
        for name, value in self.string_properties(exec_properties).items():
            examples.set_string_custom_property(name, value)
        logging.info(
            "%s: %s", type(self).__name__,
            ", ".join(f"{name}={value}" for name, value in counts.items()),
        )
        self.after_counting(counts, exec_properties)
