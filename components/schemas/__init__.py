"""The curated schemas the pipelines import (ImportSchemaGen), one per kind of data source.

A schema is inferred once from real statistics (`genpipe schema update`), reviewed, and kept under
version control here as text (`<name>.pbtxt`); each run's examples are validated against it, so a
source whose data changes shape is stopped instead of silently re-described. Which schema a
pipeline imports depends on its model and source (`pipeline.registry`). The features the
ExampleGens add for drift detection are named here, with the limits a drift check takes
(`DriftLimit`); `merge` merges new statistics into a curated schema (`genpipe schema update`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent
# The same folder inside the pipeline image (the Dockerfile's WORKDIR, where it copies
# components/): what a spec compiled for Kubeflow points ImportSchemaGen at.
IMAGE_SCHEMA_DIR = "/opt/genpipe/src/components/schemas"
SCHEMA_NAMES = ("text_offline", "text_folder", "digits", "image_folder")
STATISTICS_FILE = "FeatureStats.pb"  # StatisticsGen's file in each Split-<name> folder
INFERRED_FROM_SPLIT = "train"  # SchemaGen's source split; eval is validated against it
# Features the ExampleGens derive for drift detection (compared run to run): words per document,
# the document's distinct words as Transform's vocabulary sees them, and mean pixel intensity in
# [0, 1] per image.
NUM_WORDS, WORDS, MEAN_INTENSITY = "num_words", "words", "mean_intensity"
# TFDV's distribution comparators (schema_pb2.FeatureComparator fields): Jensen-Shannon
# divergence of histograms for numbers, L-infinity distance of value frequencies for strings.
JENSEN_SHANNON, L_INFINITY = "jensen_shannon_divergence", "infinity_norm"
COMPARATORS = (JENSEN_SHANNON, L_INFINITY)


@dataclasses.dataclass(frozen=True)
class DriftLimit:
    """The largest distance allowed between a feature's distribution and the one of the last
    run that passed the data checks, measured by `comparator` (one of COMPARATORS)."""

    threshold: float
    comparator: str = JENSEN_SHANNON

    def __post_init__(self) -> None:
        if self.comparator not in COMPARATORS:
            raise ValueError(f"drift comparator {self.comparator!r} is unknown; allowed: "
                             f"{', '.join(COMPARATORS)}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"drift threshold {self.threshold!r} is out of range; allowed: "
                             "a number in (0, 1]")


def check_schema_name(name: str) -> str:
    """`name`, or a ValueError naming the allowed schemas."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"schema {name!r} is unknown; allowed: {', '.join(SCHEMA_NAMES)}")
    return name


def schema_file(name: str, directory: str | None = None) -> str:
    """The absolute path of the curated schema `name` (what ImportSchemaGen reads), in this
    checkout or in `directory` (e.g. `IMAGE_SCHEMA_DIR`)."""
    return os.path.join(directory or str(SCHEMA_DIR), f"{check_schema_name(name)}.pbtxt")


def load_schema(path: str) -> Any:
    """A schema_pb2.Schema from a .pbtxt file."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.dsl.io import fileio

    with fileio.open(path, "r") as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def infer_schema(statistics_uri: str) -> Any:
    """The schema SchemaGen would infer (fixed feature shapes) from a StatisticsGen artifact."""
    import tensorflow_data_validation as tfdv

    path = os.path.join(statistics_uri, f"Split-{INFERRED_FROM_SPLIT}", STATISTICS_FILE)
    statistics = tfdv.load_stats_binary(path)
    return tfdv.infer_schema(statistics, infer_feature_shape=True)
