"""Pipeline stages `pipeline.factory.create_pipeline` shares between models, each defined once.

All functions build TFX components (TFX is imported inside them: `import tfx` is slow) and keep
the component ids the run summaries and ML Metadata lineage rely on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.runner import RunSummary

SERVING_VALIDATOR, PUSHER = "ServingValidator", "Pusher"  # component ids the summaries read
LAST_BLESSED = "LastBlessedModel"  # component id of the compiled last-blessed lookup
PREVIOUS_STATISTICS = "PreviousStatistics"  # component id of the drift baseline's lookup
ANOMALY_GATE = "AnomalyGate"  # component id of the data gate; a run passed it or not
UNCACHED = (LAST_BLESSED, PREVIOUS_STATISTICS)  # lookups that must look again on every run
BASELINE_METADATA = "baseline_metadata"  # the compiled lookups' runtime parameter
# The split pairs (this run's, the baseline's) compared for drift: train only, as the smoke
# eval split (31 reviews) moves past the limits between two samples of the same source.
DRIFT_SPLIT_PAIRS = [("train", "train")]
KUBEFLOW_METADATA = "grpc://metadata-grpc-service.kubeflow:8080"  # open-source KFP's MLMD


def data_validation(
    examples: Any,
    schema_file: str,
    drift_thresholds: Mapping[str, Any] | None = None,
    pipeline_name: str = "",
    metadata: Any = None,
) -> list[Any]:
    """StatisticsGen -> ImportSchemaGen -> ExampleValidator [-> PreviousStatistics ->
    DistributionValidator] -> AnomalyGate over `examples`.

    The examples are validated against the curated schema at `schema_file`
    (`components.schemas`). With `drift_thresholds` (feature -> largest distance, as
    `components.data_validation.drift_config` takes them), the train split's statistics are also
    compared with those of the newest earlier run of `pipeline_name` that passed the gate, which
    the `PreviousStatistics` component finds in the ML Metadata store at `metadata` (an address,
    `store_address` for a local run, or a RuntimeParameter; `components.common.
    previous_statistics`). The schema is `components[1].outputs["schema"]`; a component that
    must wait for clean data takes `components[-1]` as an upstream node.
    """
    from tfx import v1 as tfx
    from tfx.components import DistributionValidator  # not in tfx.v1's public names yet

    from components.data_validation import AnomalyGate, drift_config

    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file).with_id("SchemaGen")
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    components = [statistics_gen, schema_gen, example_validator]
    drift = {}
    if drift_thresholds:
        if not pipeline_name or metadata is None:
            raise ValueError("data_validation: a drift check needs the pipeline_name whose "
                             "earlier runs it compares with and the metadata store holding them")
        from components.common.previous_statistics import PreviousStatistics

        previous = PreviousStatistics(
            statistics=statistics_gen.outputs["statistics"], pipeline_name=pipeline_name,
            gate=ANOMALY_GATE, metadata=metadata,
        ).with_id(PREVIOUS_STATISTICS)
        drift_validator = DistributionValidator(
            statistics=statistics_gen.outputs["statistics"],
            baseline_statistics=previous.outputs["baseline"],
            config=drift_config(drift_thresholds),
            include_split_pairs=DRIFT_SPLIT_PAIRS,
        )
        components += [previous, drift_validator]
        drift = {"drift": drift_validator.outputs["anomalies"],
                 "baseline": previous.outputs["baseline"]}
    anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"], **drift)
    return [*components, anomaly_gate.with_id(ANOMALY_GATE)]


def store_address(connection_config: Any) -> str:
    """The `sqlite://PATH` address (as the lookups take it) of a local run's ML Metadata store;
    ValueError for any other connection."""
    if connection_config is None or not connection_config.HasField("sqlite"):
        raise ValueError("metadata_connection_config: a local run's drift check reads its own "
                         "store, which must be sqlite (RootLayout.metadata_config)")
    return f"sqlite://{connection_config.sqlite.filename_uri}"


def trainer(run_fn: str, transform: Any, custom_config: dict[str, Any]) -> Any:
    """A Trainer on Transform's output: fits the `train` split, evaluates on `eval`."""
    from tfx import v1 as tfx

    return tfx.components.Trainer(
        run_fn=run_fn,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=custom_config,
    )


def latest_blessed_model(pipeline_name: str, metadata: Any = None) -> tuple[Any, Any]:
    """(node, ModelBlessing channel) handing evaluators the last blessed model of this pipeline.

    With `metadata` None (LocalDagRunner): TFX's LatestBlessedModelStrategy resolver. Otherwise
    (compiled for Kubeflow, whose open-source backend runs no resolver): the `LastBlessedModel`
    container component asking the ML Metadata store at `metadata` (an address or a
    RuntimeParameter; `components.common.last_blessed`).
    """
    from tfx import v1 as tfx

    if metadata is None:
        resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        return resolver, resolver.outputs["model_blessing"]
    from components.common.last_blessed import LastBlessedModel

    lookup = LastBlessedModel(pipeline_name=pipeline_name, metadata=metadata).with_id(LAST_BLESSED)
    return lookup, lookup.outputs["blessing"]


def knobs(for_local_run: bool, **values: Any) -> dict[str, Any]:
    """The settings a scheduled Kubeflow run may change (data location, sizes): the values
    themselves for a local run; for a compiled spec, TFX RuntimeParameters of the same names
    defaulting to them (the spec's root inputs)."""
    if for_local_run:
        return values
    from tfx import v1 as tfx

    return {name: tfx.dsl.experimental.RuntimeParameter(name=name, ptype=type(value),
                                                        default=value)
            for name, value in values.items()}


def compile_time_value(value: Any) -> Any:
    """`value`, or a RuntimeParameter's default (what the pipeline is compiled for)."""
    from tfx import v1 as tfx

    return value.default if isinstance(value, tfx.dsl.experimental.RuntimeParameter) else value


def baseline_metadata(for_local_run: bool) -> Any:
    """Where a compiled spec's lookups find their baselines: the runtime parameter
    `baseline_metadata` (default: Kubeflow's metadata-grpc-service). None for a local run: its
    last blessed model comes from the resolver, its drift baseline from its own store
    (`store_address`)."""
    if for_local_run:
        return None
    return knobs(False, **{BASELINE_METADATA: KUBEFLOW_METADATA})[BASELINE_METADATA]


def validate_and_push(
    model: Any, model_name: str, serving_dir: str, blessing: Any = None
) -> list[Any]:
    """`ServingValidator` then `AtomicPusher` of `model` as `model_name` to
    `<serving_dir>/<version>/` (component ids `ServingValidator` and `Pusher`).

    The Pusher pushes only when the model answers every signature of its contract on TF
    Serving's loading path, and when `blessing` (the evaluator's ModelBlessing, if any) is
    blessed too; the validated requests become the version's TF Serving warmup file.
    """
    from tfx import v1 as tfx

    from components.common.serving_validation import ServingValidator
    from components.push import AtomicPusher

    validator = ServingValidator(model=model, model_name=model_name).with_id(SERVING_VALIDATOR)
    pusher = AtomicPusher(
        model=model,
        model_blessing=blessing,
        infra_blessing=validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)
        ),
    ).with_id(PUSHER)
    return [validator, pusher]


def serving_lines(summary: RunSummary) -> list[str]:
    """The serving validation's result (with its sample PNGs) and where the model is served."""
    validation = summary.output(SERVING_VALIDATOR, "blessing").properties
    samples = f" (samples: {validation['samples']})" if validation.get("samples") else ""
    lines = [f"serving validation: {validation['blessing_message']}{samples}"]
    pushed = summary.output(PUSHER, "pushed_model").properties
    lines.append(f"served from {pushed['pushed_destination']}" if pushed.get("pushed")
                 else f"not pushed: {pushed.get('not_pushed_reason', 'see the gate above')}")
    return lines
