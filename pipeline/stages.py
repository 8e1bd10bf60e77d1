"""Pipeline stages every model's `create_pipeline` shares, so each is defined once.

All functions build TFX components (TFX is imported inside them: `import tfx` is slow) and keep
the component ids the run summaries and ML Metadata lineage rely on.
"""

from __future__ import annotations

from typing import Any


def data_validation(examples: Any) -> list[Any]:
    """StatisticsGen -> SchemaGen -> ExampleValidator -> AnomalyGate over `examples`.

    Returns the four components; the schema is `components[1].outputs["schema"]` and a
    component that must wait for clean data takes `components[-1]` as an upstream node.
    """
    from tfx import v1 as tfx

    from components.data_validation import AnomalyGate

    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
    )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"])
    return [statistics_gen, schema_gen, example_validator, anomaly_gate]


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


def latest_blessed_model() -> Any:
    """The resolver that hands evaluators the last blessed model of this pipeline."""
    from tfx import v1 as tfx

    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")


def pusher(model: Any, blessing: Any, serving_dir: str) -> Any:
    """`AtomicPusher` of a blessed model to `<serving_dir>/<version>/` (component id `Pusher`)."""
    from tfx import v1 as tfx

    from components.push import AtomicPusher

    return AtomicPusher(
        model=model,
        model_blessing=blessing,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)
        ),
    ).with_id("Pusher")
