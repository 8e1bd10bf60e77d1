"""The image-generator pipelines (VAE, DCGAN) as one pure `create_pipeline` factory.

ImageExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> AnomalyGate
-> Transform (pixels to [0, 1]) -> Trainer (VAE or DCGAN run_fn) -> VaeEvaluator / GanEvaluator
(with the latest blessed model as baseline) and ServingValidator (every signature on TF Serving's
loading path; the warmup requests) -> Pusher (atomic, to `<serving_dir>/<version>/`, when both
bless).
`pipeline.vae` and `pipeline.gan` are the `genpipe run vae|gan` targets built on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from components.images.dataset import check_dataset, image_shape
from pipeline import stages
from pipeline.profiles import GanProfile, VaeProfile
from pipeline.runner import RootLayout, RunOptions, RunSummary


@dataclasses.dataclass(frozen=True)
class ImageModel:
    """What differs between the VAE and the DCGAN pipelines."""

    name: str  # the serving name (`contracts/`) and the pipeline name's prefix
    run_fn: str
    evaluator: str  # the evaluation component's class in components.images.evaluate


VAE = ImageModel("vae", "components.images.vae_trainer.run_fn", "VaeEvaluator")
GAN = ImageModel("gan", "components.images.gan_trainer.run_fn", "GanEvaluator")
PREPROCESSING_FN = "components.images.transform.preprocessing_fn"


def pipeline_name(model: ImageModel, profile: VaeProfile | GanProfile) -> str:
    """One pipeline (and MLMD context) per model and profile: baselines compare like with like."""
    return f"{model.name}-{profile.name}"


def create_pipeline(
    *,
    model: ImageModel,
    pipeline_name: str,
    pipeline_root: str,
    serving_dir: str,
    profile: VaeProfile | GanProfile,
    dataset: Any = "mnist",
    max_images: Any = None,
    baseline_metadata: Any = None,
    metadata_connection_config: Any = None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
) -> Any:
    """The TFX pipeline of `model` for `profile` (no side effects; returns a tfx Pipeline).

    `dataset` and `max_images` (default: the profile's) may be RuntimeParameters; the image
    shape is the compile-time dataset's. `baseline_metadata` is
    `stages.latest_blessed_model`'s `metadata`.
    """
    from tfx import v1 as tfx

    from components.images import evaluate
    from components.images.example_gen import ImageExampleGen

    shape = image_shape(stages.compile_time_value(dataset), profile.folder_shape())
    if max_images is None:
        max_images = profile.max_images
    example_gen = ImageExampleGen(dataset=dataset, image_shape=shape, max_images=max_images)
    validation = stages.data_validation(example_gen.outputs["examples"])
    height, width, channels = shape
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=validation[1].outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"image_height": height, "image_width": width, "image_channels": channels},
        disable_statistics=True,  # StatisticsGen already describes the data
        disable_analyzer_cache=True,  # no analyzers: nothing to reuse
    )
    transform.add_upstream_node(validation[-1])  # only data that passed the anomaly gate
    trainer = stages.trainer(model.run_fn, transform, profile.trainer_config())
    latest_blessed, baseline = stages.latest_blessed_model(pipeline_name, baseline_metadata)
    evaluator = getattr(evaluate, model.evaluator)(
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        model=trainer.outputs["model"],
        baseline_blessing=baseline,
        **profile.evaluator_parameters(),
    )
    validate_and_push = stages.validate_and_push(
        trainer.outputs["model"], model.name, serving_dir, evaluator.outputs["blessing"]
    )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen, *validation, transform, trainer, latest_blessed, evaluator,
            *validate_and_push,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def build_pipeline(
    model: ImageModel, profile: VaeProfile | GanProfile, options: RunOptions, *,
    for_local_run: bool = True,
) -> Any:
    """The pipeline for `genpipe run vae|gan` options, laid out under the root.

    `options.source` is the `--dataset` (`offline` means MNIST).
    """
    dataset = check_dataset(options.source, must_exist=for_local_run)
    layout = RootLayout.for_run(options.root, for_local_run)
    name = pipeline_name(model, profile)
    return create_pipeline(
        model=model,
        pipeline_name=name,
        pipeline_root=layout.pipeline_root(name),
        serving_dir=layout.serving_dir(model.name),
        profile=profile,
        **stages.knobs(for_local_run, dataset=dataset, max_images=profile.max_images),
        baseline_metadata=stages.baseline_metadata(for_local_run),
        metadata_connection_config=layout.metadata_config() if for_local_run else None,
        beam_pipeline_args=options.beam_pipeline_args,
        enable_cache=options.enable_cache,
    )


def summary_lines(summary: RunSummary, metric_line: str, evaluator: str) -> list[str]:
    """Component states, data counts, `metric_line`, the blessings and where the model is served."""
    lines = [summary.counts_line()]
    examples = summary.output("ImageExampleGen", "examples").properties
    lines.append(
        "data: {source} as {image_shape} images: {images_read} read, {corrupt_images} "
        "unreadable skipped; {train_examples} train / {eval_examples} eval examples".format(
            **examples)
    )
    blessing = summary.output(evaluator, "blessing").properties
    lines.append(metric_line.format(**blessing))
    lines.append(blessing["blessing_message"])
    return [*lines, *stages.serving_lines(summary)]
