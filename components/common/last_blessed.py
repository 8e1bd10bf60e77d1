"""The last blessed model of a pipeline, looked up in ML Metadata by an ordinary component.

Kubeflow's open-source backend runs only container and importer executors, so a compiled
pipeline cannot use TFX's `LatestBlessedModelStrategy` resolver (LocalDagRunner keeps it; see
`pipeline.stages.latest_blessed_model`). `LastBlessedModel` asks ML Metadata itself and outputs a
ModelBlessing for the evaluators' `baseline_blessing`:

- a copy of the latest blessed ModelBlessing of the pipeline (its properties: `blessed`,
  `current_model_id`, the metrics), or
- a placeholder with `blessed` 0 when there is none or the store cannot be reached (the
  evaluators then judge without a baseline, as on a first run).

Both carry `last_blessed_lookup` = 1, so a later lookup never takes a copy for an evaluator's
blessing. The store is `grpc://HOST:PORT` (Kubeflow's metadata-grpc-service), `sqlite://PATH` or
empty (no lookup). The pipeline's blessings are found under TFX's `pipeline` context or under
Kubeflow v2's `system.Pipeline` context and its run contexts.
"""

# No `from __future__ import annotations`: TFX reads the component's annotations as types.
import json
import os
from collections.abc import Iterable
from typing import Any

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.types.standard_artifacts import ModelBlessing

from components.common.evaluation import BLESSED, BLESSING_MESSAGE, set_properties

PIPELINE_CONTEXT_TYPES = ("pipeline", "system.Pipeline")  # TFX's, Kubeflow v2's
BLESSING_TYPES = ("ModelBlessing", "tfx.ModelBlessing")  # TFX's, Kubeflow's schema title
LOOKUP = "last_blessed_lookup"
REPORT_FILE = "last_blessed.json"
ADDRESS_HELP = "grpc://HOST:PORT, sqlite://PATH or '' (no lookup)"
GRPC_TIMEOUT = 60.0  # seconds a gRPC store may take to answer


def connection_config(address: str) -> Any:
    """The ML Metadata connection of `address` (see ADDRESS_HELP); ValueError otherwise."""
    if address.startswith("grpc://"):
        host, _, port = address[len("grpc://"):].rpartition(":")
        if host and port.isdigit():
            return metadata_store_pb2.MetadataStoreClientConfig(
                host=host, port=int(port), client_timeout_sec=GRPC_TIMEOUT)
    elif address.startswith("sqlite://") and len(address) > len("sqlite://"):
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = address[len("sqlite://"):]
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
        return config
    raise ValueError(f"metadata {address!r} is not a metadata store address; allowed: "
                     f"{ADDRESS_HELP}")


def number(value: metadata_store_pb2.Value) -> float | None:
    """A numeric MLMD value as TFX (int, double, JSON struct) or Kubeflow (double) stores it."""
    kind = value.WhichOneof("value")
    if kind in ("int_value", "double_value"):
        return float(getattr(value, kind))
    if kind == "struct_value":
        from google.protobuf import json_format

        decoded = json_format.MessageToDict(value.struct_value)
        decoded = decoded.get("__value__", decoded)
        return float(decoded) if isinstance(decoded, int | float) else None
    return None


def pipeline_contexts(store: Any, pipeline_name: str) -> list[Any]:
    """The pipeline's contexts (TFX's and Kubeflow's types) and their child contexts."""
    from ml_metadata import errors

    found = []
    for type_name in PIPELINE_CONTEXT_TYPES:
        try:
            context = store.get_context_by_type_and_name(type_name, pipeline_name)
        except errors.NotFoundError:  # the store never held this context type
            continue
        if context is not None:
            found += [context, *store.get_children_contexts_by_context(context.id)]
    return found


def is_evaluator_blessing(artifact: Any) -> bool:
    """Blessed, and not one of this component's own copies."""
    properties = artifact.custom_properties
    return (BLESSED in properties and number(properties[BLESSED]) == 1
            and LOOKUP not in properties)


def latest(artifacts: Iterable[Any]) -> Any | None:
    """The newest artifact (creation time, then id)."""
    return max(artifacts, key=lambda a: (a.create_time_since_epoch, a.id), default=None)


def find_last_blessed(store: Any, pipeline_name: str) -> Any | None:
    """The latest blessed ModelBlessing (an MLMD Artifact) of `pipeline_name`, or None."""
    types = {t.id: t.name for t in store.get_artifact_types()}
    candidates = {}
    for context in pipeline_contexts(store, pipeline_name):
        for artifact in store.get_artifacts_by_context(context.id):
            if types.get(artifact.type_id) in BLESSING_TYPES and is_evaluator_blessing(artifact):
                candidates[artifact.id] = artifact
    return latest(candidates.values())


def lookup(address: str, pipeline_name: str) -> tuple[Any | None, str]:
    """(the last blessed MLMD artifact or None, a sentence saying what was found)."""
    if not address:
        return None, "no metadata store given: no baseline"
    config = connection_config(address)
    try:
        import ml_metadata as mlmd

        found = find_last_blessed(mlmd.MetadataStore(config), pipeline_name)
    except Exception as error:  # noqa: BLE001 (an unreachable store means no baseline)
        return None, f"metadata store {address} unusable ({type(error).__name__}: {error}); " \
                     "no baseline"
    if found is None:
        return None, f"no blessed model of {pipeline_name} yet in {address}"
    return found, f"last blessed: ModelBlessing #{found.id} of {pipeline_name} in {address}"


@tfx.dsl.components.component
def LastBlessedModel(  # noqa: N802 (TFX component names are classes)
    blessing: tfx.dsl.components.OutputArtifact[ModelBlessing],
    pipeline_name: tfx.dsl.components.Parameter[str],
    metadata: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Outputs the last blessed ModelBlessing of `pipeline_name` found in the `metadata` store,
    or a not-blessed placeholder (see the module docstring)."""
    found, message = lookup(metadata, pipeline_name)
    if found is None:
        set_properties(blessing, {BLESSED: False, BLESSING_MESSAGE: message})
    else:
        for key, value in found.custom_properties.items():
            blessing.mlmd_artifact.custom_properties[key].CopyFrom(value)
        set_properties(blessing, {BLESSED: True, "last_blessed_artifact_id": found.id,
                                  "last_blessed_uri": found.uri})
    set_properties(blessing, {LOOKUP: True})
    fileio.makedirs(blessing.uri)
    with fileio.open(os.path.join(blessing.uri, REPORT_FILE), "w") as handle:
        handle.write(json.dumps({"found": found is not None, "message": message}) + "\n")
    print(f"  {message}", flush=True)
