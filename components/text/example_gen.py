"""Text ingestion as a TFX ExampleGen: review documents -> tf.Examples split 90/10 by text hash.

The executor is a `BaseExampleGenExecutor`, so splitting is TFX's own; it adds the Beam source
and the cleaning steps. The source streams (`components.text.reading`): document names are
listed, each document is read on its own, duplicates are found by a digest of the text, and
examples are written without a shuffle (`components.common.example_gen`), so memory holds names
and digests, not texts. Every dropped record is counted with a Beam metric, logged, and stored
as an int custom property of the Examples artifact (`components.common.example_gen`):
`documents_read`, `undecodable_documents`, `oversized_documents`, `empty_documents`,
`duplicate_documents`, `examples_written` and `<split>_examples`. It fails, saying so, when fewer
than 101 distinct documents reach the train split (see MIN_TRAIN_EXAMPLES).

The component is driver-less (like a query-based ExampleGen): its cache key is the source string
and options, not the folder's content, so re-run without cache after editing a source folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.common.example_gen import CountingExampleGenExecutor, counter
from components.schemas import NUM_WORDS, WORDS
from components.text.reading import document_names, read_document
from models.text.standardize import tokenize
from sources.reviews import Review

METRICS_NAMESPACE = "genpipe.text_example_gen"
TEXT_FEATURE = "text"
SPLITS = (("train", 9), ("eval", 1))  # hash buckets: 90% train, 10% eval
# SchemaGen (TFDV infer_schema, max_string_domain_size=100) treats a string feature with at most
# 100 distinct training values as categorical; the eval texts would then all be "anomalies".
MIN_TRAIN_EXAMPLES = 101
WORDS_BATCH = 256  # documents tokenized together for the `words` feature
COUNTERS = (
    "documents_read",
    "undecodable_documents",
    "oversized_documents",
    "empty_documents",
    "duplicate_documents",
    "examples_written",
)


def _counter(name: str) -> beam.metrics.metric.Metrics.DelegatingCounter:
    return counter(METRICS_NAMESPACE, name)


def read_counted(name: str, source: str) -> Review:
    """The document `name` of `source`, counted as read."""
    _counter("documents_read").inc()
    return read_document(name, source)


def is_usable(review: Review) -> bool:
    """Drops (and counts) undecodable, oversized and empty or whitespace-only documents."""
    if review.text is None:
        _counter("oversized_documents" if review.too_large else "undecodable_documents").inc()
        return False
    if not review.text.strip():
        _counter("empty_documents").inc()
        return False
    return True


def text_key(review: Review) -> tuple[bytes, str]:
    """(digest of the text, name): what deduplication shuffles instead of the text itself."""
    return hashlib.sha256(review.text.encode("utf-8")).digest(), review.origin


def first_of_duplicates(keyed: tuple[bytes, Iterable[str]]) -> str:
    """Keeps one document per distinct text (the smallest name, so the choice is stable)."""
    _, names = keyed
    names = list(names)
    _counter("duplicate_documents").inc(len(names) - 1)
    return min(names)


def to_example(review: Review, words: list[bytes]) -> tf.train.Example:
    """`text`, `origin` and, for drift detection run to run, `num_words` (words split at white
    space) and `words` (the text's distinct words, as given); `label` when the source has one."""
    _counter("examples_written").inc()

    def bytes_feature(*values: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    features = {
        TEXT_FEATURE: bytes_feature(review.text.encode("utf-8")),
        "origin": bytes_feature(review.origin.encode("utf-8")),
        NUM_WORDS: tf.train.Feature(
            int64_list=tf.train.Int64List(value=[len(review.text.split())])),
        WORDS: bytes_feature(*words),
    }
    if review.label is not None:
        features["label"] = bytes_feature(review.label.encode("utf-8"))
    return tf.train.Example(features=tf.train.Features(feature=features))


def to_examples(reviews: list[Review]) -> list[tf.train.Example]:
    """A batch of reviews as Examples, with each text's distinct words as Transform's vocabulary
    sees them (`tokenize` once per batch: 5 us a document; a call per document takes 2 ms)."""
    words = tokenize(tf.constant([review.text for review in reviews])).to_list()
    return [to_example(review, sorted(set(split)))
            for review, split in zip(reviews, words, strict=True)]


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def ReviewsToExample(  # noqa: N802 (Beam PTransform naming)
    pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str
) -> beam.PCollection:
    """Streams, cleans and deduplicates the documents of `exec_properties['source']`: only names
    and text digests are shuffled; a kept document is read again to become an Example."""
    del split_pattern  # the source is a parameter, not a file pattern
    source = exec_properties["source"]
    max_documents = int(exec_properties.get("max_documents") or 0)
    return (
        pipeline
        | "Source" >> beam.Create([source])
        | "ListDocuments" >> beam.FlatMap(document_names, max_documents)
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.Map(read_counted, source)
        | "DropUnusable" >> beam.Filter(is_usable)
        | "KeyByDigest" >> beam.Map(text_key)
        | "GroupDuplicates" >> beam.GroupByKey()
        | "KeepOne" >> beam.Map(first_of_duplicates)
        | "ReadKept" >> beam.Map(read_document, source)
        | "Batch" >> beam.BatchElements(max_batch_size=WORDS_BATCH)
        | "ToExample" >> beam.FlatMap(to_examples)
    )


class Executor(CountingExampleGenExecutor):
    """ExampleGen executor for review text (counters on the artifact, see the module docstring)."""

    METRICS_NAMESPACE = METRICS_NAMESPACE
    COUNTERS = COUNTERS

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX API)
        return ReviewsToExample

    def string_properties(self, exec_properties: dict[str, Any]) -> dict[str, str]:
        return {"source": exec_properties["source"]}

    def after_counting(self, counts: dict[str, int], exec_properties: dict[str, Any]) -> None:
        """Prints the counts; fails when too few documents reach the train split."""
        print("  " + ", ".join(f"{name}={value}" for name, value in counts.items()), flush=True)
        if counts.get("train_examples", MIN_TRAIN_EXAMPLES) < MIN_TRAIN_EXAMPLES:
            raise ValueError(
                f"source {exec_properties['source']!r} gave {counts['train_examples']} distinct "
                f"training documents; the text pipeline needs at least {MIN_TRAIN_EXAMPLES} "
                "(fewer make schema inference treat the text as a category). Use a bigger "
                "source or a larger max_documents."
            )


class TextExampleGenSpec(types.ComponentSpec):
    """Parameters of `TextExampleGen` (the two configs are the ones every ExampleGen reads)."""

    PARAMETERS = {
        "source": ExecutionParameter(type=str),
        "max_documents": ExecutionParameter(type=int, optional=True),
        "input_config": ExecutionParameter(type=example_gen_pb2.Input),
        "output_config": ExecutionParameter(type=example_gen_pb2.Output),
        "output_data_format": ExecutionParameter(type=int),
        "output_file_format": ExecutionParameter(type=int),
    }
    INPUTS: dict[str, ChannelParameter] = {}
    OUTPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}


class TextExampleGen(base_beam_component.BaseBeamComponent):
    """Review documents as tf.Examples (`text`, `origin`, `label`, and `num_words` and `words`
    for drift detection), split train/eval 90/10 by a hash of the text, after dropping
    undecodable, empty and duplicate documents.

    `source` is `offline`, an `aclImdb` folder or a folder of `.txt` files (see
    `sources.reviews.reviews`); `max_documents` > 0 reads only that many documents.
    """

    SPEC_CLASS = TextExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, source: str = "offline", max_documents: int = 0):
        output_config = example_gen_pb2.Output(
            split_config=example_gen_pb2.SplitConfig(
                splits=[
                    example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets)
                    for name, buckets in SPLITS
                ],
                partition_feature_name=TEXT_FEATURE,
            )
        )
        pattern = source if isinstance(source, str) else "runtime parameter source"
        input_config = example_gen_pb2.Input(  # the pattern is not read (see ReviewsToExample)
            splits=[example_gen_pb2.Input.Split(name="single_split", pattern=pattern)]
        )
        super().__init__(
            TextExampleGenSpec(
                source=source,
                max_documents=max_documents,
                input_config=input_config,
                output_config=output_config,
                output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
                output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
                examples=types.Channel(type=standard_artifacts.Examples),
            )
        )
