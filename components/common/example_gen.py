"""ExampleGen executors whose Beam counters end up on the Examples artifact.

A subclass of `CountingExampleGenExecutor` names its Beam metrics namespace and counters and
increments them while reading (`counter(namespace, name).inc()`). After the pipeline finishes,
every counter, plus `<split>_examples` for each output split, is stored as an int custom property
of the Examples artifact, so what the ingestion read, dropped and wrote is visible in ML Metadata.

Splits are written as they stream (no shuffle of the examples before writing, unlike TFX's own
ExampleGens), so the in-memory DirectRunner never holds a whole split.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, ClassVar

import apache_beam as beam
from absl import logging
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import proto_utils


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

    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """TFX's ExampleGen `Do` (gzipped TFRecords of tf.Examples) without its shuffle before
        writing, then the counts stored on the Examples artifact."""
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        splits = split_names(exec_properties)
        examples.split_names = artifact_utils.encode_split_names(splits)
        with self._make_beam_pipeline() as pipeline:
            for name, split in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                _ = split | f"WriteSplit[{name}]" >> WriteExamples(
                    artifact_utils.get_split_uri([examples], name)
                )
        examples_utils.set_payload_format(examples, exec_properties["output_data_format"])
        examples_utils.set_file_format(
            examples, write_split.to_file_format_str(exec_properties["output_file_format"])
        )
        names = (*self.COUNTERS, *(f"{split}_examples" for split in splits))
        counts = counter_values(pipeline.result, self.METRICS_NAMESPACE, names)
        for name, value in counts.items():
            examples.set_int_custom_property(name, value)
        for name, value in self.string_properties(exec_properties).items():
            examples.set_string_custom_property(name, value)
        logging.info(
            "%s: %s", type(self).__name__,
            ", ".join(f"{name}={value}" for name, value in counts.items()),
        )
        self.after_counting(counts, exec_properties)


def split_names(exec_properties: dict[str, Any]) -> list[str]:
    """The output split names an ExampleGen's input and output configs give."""
    input_config = proto_utils.json_to_proto(
        exec_properties["input_config"], example_gen_pb2.Input()
    )
    output_config = proto_utils.json_to_proto(
        exec_properties["output_config"], example_gen_pb2.Output()
    )
    return example_gen_utils.generate_output_split_names(input_config, output_config)


@beam.ptransform_fn
def WriteExamples(  # noqa: N802 (Beam PTransform naming)
    examples: beam.PCollection, split_uri: str
) -> beam.pvalue.PDone:
    """Writes one split as gzipped TFRecords, each bundle streamed to its own file.

    TFX's `WriteSplit` shuffles first (`Reshuffle`), which holds every example of the split in
    memory on the DirectRunner; the sources here spread their work before reading instead.
    """
    return (
        examples
        | "Serialize" >> beam.ParDo(write_split.MaybeSerialize())
        | "Write" >> beam.io.WriteToTFRecord(
            os.path.join(split_uri, write_split.DEFAULT_TF_RECORD_FILE_NAME),
            file_name_suffix=".gz",
        )
    )
