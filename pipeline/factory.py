"""One `create_pipeline()` for every registered model (`pipeline.registry`), and
`build_pipeline()`, which lays a `genpipe run` out under its root.

With data (text, VAE, DCGAN):
    ExampleGen -> StatisticsGen -> SchemaGen (the curated schema) -> ExampleValidator and
    DistributionValidator (drift from the last run that passed the gate) -> AnomalyGate
    -> Transform -> Trainer -> evaluator (with the latest blessed model as baseline; the DCGAN
    on digits also with a digit classifier) and ServingValidator -> Pusher (when both bless)
Fast style network:  ContentPhotoGen -> Trainer -> ServingValidator -> Pusher
DeepDream, style transfer:  ExportPretrainedModel -> ServingValidator -> Pusher

ServingValidator calls every signature on TF Serving's loading path and writes the warmup
requests; Pusher is `AtomicPusher`, to `<serving_dir>/<version>/`. Each component gets its
part of the profile as a plain dict (`dataclasses.asdict`). TFX is imported inside the
functions (`import tfx` takes tens of seconds).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from components.schemas import IMAGE_SCHEMA_DIR
from pipeline import stages
from pipeline.profiles import get_profile
from pipeline.registry import DEFAULT_STYLE, ModelPipeline
from pipeline.runner import RootLayout, RunOptions

DIGIT_CLASSIFIER = "DigitClassifierTrainer"  # component id (summaries, status)


def _component(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _example_gen(model: ModelPipeline, profile: Any, data: Mapping[str, Any]
                 ) -> tuple[Any, dict[str, Any] | None]:
    """The ingestion component and the Transform's `custom_config` that goes with it."""
    kind = model.stages.example_gen
    if kind == "TextExampleGen":
        from components.text.example_gen import TextExampleGen

        return TextExampleGen(**data), dataclasses.asdict(profile.transform)
    if kind == "ImageExampleGen":
        from components.images.dataset import image_shape
        from components.images.example_gen import ImageExampleGen
        from components.images.settings import ImageTransformSettings

        shape = image_shape(stages.compile_time_value(data["dataset"]),
                            profile.ingestion.folder_shape())
        return (ImageExampleGen(image_shape=shape, **data),
                dataclasses.asdict(ImageTransformSettings(*shape)))
    if kind == "ContentPhotoGen":
        from components.fast_style.photos import ContentPhotoGen

        photo_gen = ContentPhotoGen(**data, **dataclasses.asdict(profile.photos))
        return photo_gen.with_id("ContentPhotoGen"), None
    raise ValueError(f"example_gen {kind!r} of {model.name} is unknown; allowed: "
                     "TextExampleGen, ImageExampleGen, ContentPhotoGen")


def _digit_classifier(profile: Any, data: Mapping[str, Any]) -> Any:
    """The digit classifier scoring a GAN trained on a digit set (None for other models and
    for image folders). Its only inputs are parameters, so the cache reuses it across runs."""
    from components.images.dataset import is_digits

    settings = getattr(profile, "classifier", None)
    dataset = data.get("dataset")
    if settings is None or dataset is None or not is_digits(stages.compile_time_value(dataset)):
        return None
    from components.images.digit_classifier import DigitClassifierTrainer

    return DigitClassifierTrainer(dataset=dataset, **dataclasses.asdict(settings)).with_id(
        DIGIT_CLASSIFIER)


def _evaluated(model: ModelPipeline, profile: Any, pipeline_name: str, served_name: str,
               serving_dir: str, example_gen: Any, data: Mapping[str, Any],
               transform_config: dict[str, Any], baseline_metadata: Any,
               drift_store: Any, schema_dir: str | None) -> list[Any]:
    """Validation (drift checked against the store `drift_store` unless it is None), Transform,
    Trainer, evaluator against the last blessed model, push."""
    from tfx import v1 as tfx

    from components.schemas import schema_file

    source = stages.compile_time_value(data[model.stages.source_knob])
    validation = stages.data_validation(
        example_gen.outputs["examples"], schema_file(model.stages.schema(source), schema_dir),
        None if drift_store is None else dict(model.stages.drift), pipeline_name, drift_store,
    )
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=validation[1].outputs["schema"],
        preprocessing_fn=model.stages.preprocessing_fn,
        custom_config=transform_config,
        disable_statistics=True,  # StatisticsGen already describes the data
        disable_analyzer_cache=True,  # one span per run: nothing to reuse
    )
    transform.add_upstream_node(validation[-1])  # only data that passed the anomaly gate
    trainer = stages.trainer(model.stages.run_fn, transform, dataclasses.asdict(profile.trainer))
    latest_blessed, baseline = stages.latest_blessed_model(pipeline_name, baseline_metadata)
    classifier = _digit_classifier(profile, data)
    scorers = {} if classifier is None else {"classifier": classifier.outputs["model"]}
    evaluator = _component(model.stages.evaluator)(
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        model=trainer.outputs["model"],
        baseline_blessing=baseline,
        **scorers,
        **dataclasses.asdict(profile.evaluator),
    )
    return [
        example_gen, *validation, transform, trainer, latest_blessed,
        *([] if classifier is None else [classifier]), evaluator,
        *stages.validate_and_push(trainer.outputs["model"], served_name, serving_dir,
                                  evaluator.outputs["blessing"]),
    ]


def _trained_on_examples(model: ModelPipeline, profile: Any, served_name: str,
                         serving_dir: str, example_gen: Any, style: str) -> list[Any]:
    """A Trainer straight on the examples (the fast style network), then validate and push."""
    from tfx import v1 as tfx

    trainer = tfx.components.Trainer(
        run_fn=model.stages.run_fn,
        examples=example_gen.outputs["examples"],
        train_args=tfx.proto.TrainArgs(splits=["train"], num_steps=profile.steps),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=dataclasses.asdict(dataclasses.replace(profile.trainer, style=style)),
    )
    return [example_gen, trainer,
            *stages.validate_and_push(trainer.outputs["model"], served_name, serving_dir)]


def _pretrained(profile: Any, served_name: str, serving_dir: str) -> list[Any]:
    from components.pretrained.export import ExportPretrainedModel

    export = ExportPretrainedModel(
        model_name=served_name, settings=json.dumps(profile.export.kwargs())
    ).with_id("ExportPretrainedModel")
    return [export, *stages.validate_and_push(export.outputs["model"], served_name, serving_dir)]


def create_pipeline(
    *,
    model: ModelPipeline,
    profile: Any,
    pipeline_name: str,
    pipeline_root: str,
    serving_dir: str,
    data: Mapping[str, Any] | None = None,
    style: str = DEFAULT_STYLE,
    baseline_metadata: Any = None,
    metadata_connection_config: Any = None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
    check_drift: bool = True,
    schema_dir: str | None = None,
) -> Any:
    """The TFX pipeline of `model` for `profile` (no side effects; returns a tfx Pipeline).

    `data` holds the example gen's knobs (`ModelPipeline.data_knobs`; values or
    RuntimeParameters; default: the offline source and the profile's size); `style` is the
    style image of a styled model (`--style`); `baseline_metadata` is the `metadata` of
    `stages.latest_blessed_model` and `stages.data_validation` (None: the former's resolver,
    the latter asks `metadata_connection_config`, the local sqlite store); `check_drift`
    compares the data with the last run's that passed the gate (`stages.data_validation`);
    `schema_dir` holds the curated schemas (default: this checkout's `components/schemas`).
    """
    from tfx import v1 as tfx

    served_name = model.served_name(style)
    if model.stages.pretrained_export:
        components = _pretrained(profile, served_name, serving_dir)
    else:
        data = dict(model.data_knobs(profile, "offline") if data is None else data)
        example_gen, transform_config = _example_gen(model, profile, data)
        if model.stages.preprocessing_fn is None:
            components = _trained_on_examples(model, profile, served_name, serving_dir,
                                              example_gen, style)
        else:
            drift_store = None
            if check_drift:  # a local run's own store unless told another
                drift_store = (stages.store_address(metadata_connection_config)
                               if baseline_metadata is None else baseline_metadata)
            components = _evaluated(model, profile, pipeline_name, served_name, serving_dir,
                                    example_gen, data, transform_config, baseline_metadata,
                                    drift_store, schema_dir)
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def build_pipeline(model: ModelPipeline, options: RunOptions, *,
                   for_local_run: bool = True) -> Any:
    """The pipeline of `genpipe run MODEL` with `options`, laid out under `options.root`.

    A local run checks that the source exists and uses the absolute root; a compiled spec
    (`for_local_run=False`) gets runtime parameters for the data knobs and for the store its
    baseline lookups ask. ValueError (naming the option) for a bad profile, source or style.
    """
    profile = get_profile(model.profiles, options.profile)
    source = model.check_source(options.source, for_local_run)
    if options.style is not None and not model.styled:
        raise ValueError(f"--style applies only to fast-style, not to {model.name!r}")
    style = DEFAULT_STYLE
    if model.styled:
        from components.fast_style.trainer import check_style

        style = check_style(options.style or DEFAULT_STYLE)
    layout = RootLayout.for_run(options.root, for_local_run)
    name = model.pipeline_name(profile.name, style)
    return create_pipeline(
        model=model,
        profile=profile,
        pipeline_name=name,
        pipeline_root=layout.pipeline_root(name),
        serving_dir=layout.serving_dir(model.served_name(style)),
        data=stages.knobs(for_local_run, **model.data_knobs(profile, source)),
        style=style,
        baseline_metadata=stages.baseline_metadata(for_local_run),
        metadata_connection_config=layout.metadata_config() if for_local_run else None,
        beam_pipeline_args=options.beam_pipeline_args,
        enable_cache=options.enable_cache,
        check_drift=not options.accept_drift,
        schema_dir=None if for_local_run else IMAGE_SCHEMA_DIR,
    )
