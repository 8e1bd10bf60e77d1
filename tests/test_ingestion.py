"""Ingestion streams: what the ExampleGens shuffle is names and digests, never documents or
images, and a 2-worker multi-processing DirectRunner gives what the in-memory one gives."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from PIL import Image

PROBE = "genpipe.test_ingestion"
MULTI_PROCESSING = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def _record_size(element: object) -> None:
    beam.metrics.Metrics.distribution(PROBE, "shuffled_bytes").update(len(pickle.dumps(element)))


class _ShuffleInputs(beam.pipeline.PipelineVisitor):
    """Collects the input of every GroupByKey (Reshuffle and file writes use one too)."""

    def __init__(self) -> None:
        self.inputs: list[beam.PCollection] = []

    def visit_transform(self, node: beam.pipeline.AppliedPTransform) -> None:
        if isinstance(node.transform, beam.GroupByKey):
            self.inputs.extend(node.inputs)


class _ProbedPipeline(beam.Pipeline):
    """Before running, records the pickled size of every element that enters a shuffle."""

    def run(self, test_runner_api: bool | str = "AUTO") -> beam.runners.runner.PipelineResult:
        visitor = _ShuffleInputs()
        self.visit(visitor)
        for index, pcoll in enumerate(visitor.inputs):
            _ = pcoll | f"Probe{index}" >> beam.Map(_record_size)
        return super().run(test_runner_api)


def _largest_shuffled_element(
    executor_module, component, tmp_path: Path
) -> tuple[int, object]:
    """Runs the executor with probes on its shuffles: (largest element in bytes, Examples)."""
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    class Probed(executor_module.Executor):
        def _make_beam_pipeline(self) -> beam.Pipeline:
            self.probed = _ProbedPipeline(argv=["--direct_running_mode=in_memory"])
            return self.probed

    properties = {
        key: proto_utils.proto_to_json(value) if hasattr(value, "DESCRIPTOR") else value
        for key, value in component.exec_properties.items()
    }
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    executor = Probed(BaseBeamExecutor.Context(beam_pipeline_args=[], tmp_dir=str(tmp_path)))
    executor.Do({}, {"examples": [examples]}, properties)
    query = beam.metrics.MetricsFilter().with_namespace(PROBE)
    largest = {found.key.step: found.committed.max
               for found in executor.probed.result.metrics().query(query)["distributions"]}
    print("largest element entering each shuffle (bytes):", largest)
    assert largest, "no element went through a shuffle"
    return max(largest.values()), examples


def test_text_example_gen_shuffles_names_and_digests_not_documents(tmp_path):
    from components.text import example_gen

    docs = tmp_path / "docs"
    docs.mkdir()
    for index in range(120):
        (docs / f"{index:03d}.txt").write_text(f"review {index}: " + "a long film " * 400)
    (docs / "copy.txt").write_text((docs / "007.txt").read_text())
    component = example_gen.TextExampleGen(source=str(docs))
    largest, examples = _largest_shuffled_element(example_gen, component, tmp_path)
    assert largest < 500 < len((docs / "000.txt").read_bytes())  # a document is ~4.8 KB
    assert examples.get_int_custom_property("duplicate_documents") == 1
    assert examples.get_int_custom_property("examples_written") == 120


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_example_gen_shuffles_file_names_not_images(tmp_path):
    from components.images import example_gen

    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for index in range(30):
        (faces / f"{index:03d}.png").write_bytes(
            _png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    component = example_gen.ImageExampleGen(dataset=str(faces), image_shape=(32, 32, 3))
    largest, examples = _largest_shuffled_element(example_gen, component, tmp_path)
    assert largest < 500 < 32 * 32 * 3  # an image is 3 KB of pixels
    assert examples.get_int_custom_property("examples_written") == 30


def test_document_names_are_listed_lazily_and_capped(tmp_path):
    from components.text.reading import document_names, read_document

    (tmp_path / "train" / "pos").mkdir(parents=True)
    (tmp_path / "train" / "neg").mkdir(parents=True)
    (tmp_path / "train" / "pos" / "1.txt").write_text("good<br />film")
    (tmp_path / "train" / "neg" / "2.txt").write_text("bad film")
    names = document_names(str(tmp_path), max_documents=1)
    assert iter(names) is names  # an iterator, not a list
    assert list(names) == ["train/pos/1.txt"]  # the aclImdb order: pos before neg
    review = read_document("train/pos/1.txt", str(tmp_path))
    assert (review.text, review.origin, review.label) == ("good film", "train/pos/1.txt", "pos")
    with pytest.raises(ValueError, match="neither 'offline' nor an existing folder"):
        document_names(str(tmp_path / "missing"))


# --- multi-processing DirectRunner parity ------------------------------------------------------


def _text_pipeline(root: Path, max_documents: int, transform_config: dict[str, int]):
    """TextExampleGen (offline) -> StatisticsGen -> SchemaGen -> Transform on 2 Beam workers."""
    from tfx import v1 as tfx

    from components.text.example_gen import TextExampleGen

    example_gen = TextExampleGen(source="offline", max_documents=max_documents)
    statistics = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema = tfx.components.SchemaGen(statistics=statistics.outputs["statistics"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema.outputs["schema"],
        preprocessing_fn="components.text.transform.preprocessing_fn",
        custom_config=transform_config,
        disable_statistics=True,
        disable_analyzer_cache=True,
    )
    return tfx.dsl.Pipeline(
        pipeline_name="parity-multi-processing",
        pipeline_root=str(root / "pipeline"),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(root / "metadata.sqlite")),
        components=[example_gen, statistics, schema, transform],
        enable_cache=False,
        beam_pipeline_args=list(MULTI_PROCESSING),
    )


def _outputs(examples: str, statistics: str, transform_graph: str) -> dict[str, object]:
    """Examples and statistics per split, and the Transform vocabulary, of one run."""
    import tensorflow as tf
    import tensorflow_transform as tft
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from components.text.transform import VOCABULARY_NAME

    outputs: dict[str, object] = {}
    for split in ("train", "eval"):
        files = tf.io.gfile.glob(f"{examples}/Split-{split}/*.gz")
        records = tf.data.TFRecordDataset(files, compression_type="GZIP")
        outputs[f"examples/{split}"] = sorted(  # parsed: map fields serialize in any order
            tuple(tf.train.Example.FromString(record.numpy()).features.feature[name]
                  .bytes_list.value[0] for name in ("origin", "text", "label"))
            for record in records)
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        with tf.io.gfile.GFile(f"{statistics}/Split-{split}/FeatureStats.pb", "rb") as handle:
            stats.ParseFromString(handle.read())
        [dataset] = stats.datasets
        outputs[f"statistics/{split}"] = {"num_examples": dataset.num_examples} | {
            feature.path.step[0]: (feature.string_stats.common_stats.num_non_missing,
                                   feature.string_stats.unique,
                                   round(feature.string_stats.avg_length, 3),
                                   [(top.value, top.frequency)
                                    for top in feature.string_stats.top_values])
            for feature in dataset.features
        }
    transform = tft.TFTransformOutput(transform_graph)
    outputs["vocabulary"] = transform.vocabulary_by_name(VOCABULARY_NAME)
    return outputs


@pytest.mark.slow
def test_multi_processing_direct_runner_gives_what_in_memory_gives(text_smoke_run, tmp_path):
    """The smoke pipeline's in-memory ingestion (session fixture) against the same components
    on a 2-worker multi-processing DirectRunner."""
    import dataclasses

    from tfx import v1 as tfx

    profile = text_smoke_run.profile
    tfx.orchestration.LocalDagRunner().run(_text_pipeline(
        tmp_path, profile.ingestion.max_documents, dataclasses.asdict(profile.transform)))

    def artifact(pattern: str) -> str:
        [found] = (tmp_path / "pipeline").glob(pattern)
        return str(found)

    multi = _outputs(artifact("TextExampleGen/examples/*"),
                     artifact("StatisticsGen/statistics/*"),
                     artifact("Transform/transform_graph/*"))
    first = text_smoke_run.first
    in_memory = _outputs(first.output("TextExampleGen", "examples").uri,
                         first.output("StatisticsGen", "statistics").uri,
                         first.output("Transform", "transform_graph").uri)
    assert len(in_memory["examples/train"]) > 250
    assert len(in_memory["vocabulary"]) > 100
    for key, value in in_memory.items():
        assert multi[key] == value, key
