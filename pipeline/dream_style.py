"""DeepDream (DLwP 12.2), Gatys style transfer (12.3) and the fast style network as TFX pipelines.

DeepDream and style transfer have no training data:
    ExportPretrainedModel (ImageNet weights -> SavedModel) -> ServingValidator -> Pusher
The fast style network trains on content photos:
    ContentPhotoGen -> Trainer (VGG19 perceptual loss) -> ServingValidator -> Pusher
ServingValidator runs every signature on TF Serving's loading path on a real photo (the output
must have the asked size) and writes the warmup requests; every Pusher is `AtomicPusher`, to
`<root>/serving/<model>/<version>/`. `pipeline.dream`, `pipeline.style` and `pipeline.fast_style`
are the `genpipe run` targets built on these factories.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pipeline import stages
from pipeline.profiles import (
    DREAM_PROFILES,
    FAST_STYLE_PROFILES,
    STYLE_PROFILES,
    DreamProfile,
    FastStyleProfile,
    StyleProfile,
    get_profile,
)
from pipeline.runner import RootLayout, RunOptions, RunSummary

FAST_STYLE_RUN_FN = "components.fast_style.trainer.run_fn"
DEFAULT_STYLE = "starry_night"


def create_pretrained_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    serving_dir: str,
    model_name: str,
    profile: DreamProfile | StyleProfile,
    metadata_connection_config: Any = None,
    enable_cache: bool = True,
) -> Any:
    """Export `model_name` (`deepdream` | `style_transfer`) from ImageNet weights, validate it on
    TF Serving's loading path and push it (no side effects; returns a tfx Pipeline)."""
    from tfx import v1 as tfx

    from components.pretrained.export import ExportPretrainedModel, check_model_name

    check_model_name(model_name)
    export = ExportPretrainedModel(
        model_name=model_name, settings=json.dumps(profile.export_settings())
    ).with_id("ExportPretrainedModel")
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            export, *stages.validate_and_push(export.outputs["model"], model_name, serving_dir),
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
    )


def create_fast_style_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    serving_dir: str,
    model_name: str,
    profile: FastStyleProfile,
    style: str = DEFAULT_STYLE,
    source: Any = "offline",
    metadata_connection_config: Any = None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
) -> Any:
    """Content crops -> Trainer of the transformer net for `style` -> validate -> push
    (`source` may be a RuntimeParameter)."""
    from tfx import v1 as tfx

    from components.fast_style.photos import ContentPhotoGen

    photo_gen = ContentPhotoGen(source=source, **profile.photo_gen_parameters()).with_id(
        "ContentPhotoGen"
    )
    trainer = tfx.components.Trainer(
        run_fn=FAST_STYLE_RUN_FN,
        examples=photo_gen.outputs["examples"],
        train_args=tfx.proto.TrainArgs(splits=["train"], num_steps=profile.steps),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=profile.trainer_config(style),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            photo_gen,
            trainer,
            *stages.validate_and_push(trainer.outputs["model"], model_name, serving_dir),
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def build_pretrained_pipeline(model_name: str, options: RunOptions, *,
                              for_local_run: bool = True) -> Any:
    """The `genpipe run dream|style` pipeline (`--source` does not apply: no training data)."""
    if options.source not in ("offline", ""):
        raise ValueError(f"--source {options.source!r} does not apply to {model_name}: it has no "
                         "training data (allowed: offline, the default)")
    profiles = DREAM_PROFILES if model_name == "deepdream" else STYLE_PROFILES
    profile = get_profile(profiles, options.profile)
    layout = RootLayout.for_run(options.root, for_local_run)
    name = f"{model_name.replace('_', '-')}-{profile.name}"
    return create_pretrained_pipeline(
        pipeline_name=name,
        pipeline_root=layout.pipeline_root(name),
        serving_dir=layout.serving_dir(model_name),
        model_name=model_name,
        profile=profile,
        metadata_connection_config=layout.metadata_config() if for_local_run else None,
        enable_cache=options.enable_cache,
    )


def fast_style_model_name(style: str) -> str:
    """The served name `fast_style_<style>` (`contracts.fast_style`)."""
    from components.fast_style.trainer import style_name

    return f"fast_style_{style_name(style)}"


def build_fast_style_pipeline(options: RunOptions, *, for_local_run: bool = True,
                              style: str | None = None) -> Any:
    """The `genpipe run fast-style [--style IMAGE]` pipeline."""
    from components.fast_style.photos import check_source
    from components.fast_style.trainer import check_style

    profile = get_profile(FAST_STYLE_PROFILES, options.profile)
    style = check_style(style or DEFAULT_STYLE)
    source = check_source(options.source, must_exist=for_local_run)
    model_name = fast_style_model_name(style)
    layout = RootLayout.for_run(options.root, for_local_run)
    name = f"{model_name.replace('_', '-')}-{profile.name}"
    return create_fast_style_pipeline(
        pipeline_name=name,
        pipeline_root=layout.pipeline_root(name),
        serving_dir=layout.serving_dir(model_name),
        model_name=model_name,
        profile=profile,
        style=style,
        **stages.knobs(for_local_run, source=source),
        metadata_connection_config=layout.metadata_config() if for_local_run else None,
        beam_pipeline_args=options.beam_pipeline_args,
        enable_cache=options.enable_cache,
    )


def summarize_pretrained(summary: RunSummary) -> list[str]:
    """Weights used, export limits, the validation call and the pushed version."""
    model = summary.output("ExportPretrainedModel", "model").properties
    return [
        summary.counts_line(),
        f"{model['model_name']} ({model['signature']}) from ImageNet weights: {model['weights']}",
        f"export limits: {model['limits']}",
        *stages.serving_lines(summary),
    ]


def summarize_fast_style(summary: RunSummary) -> list[str]:
    """Content crops, training losses, the validation call and the pushed version."""
    examples = summary.output("ContentPhotoGen", "examples").properties
    lines = [
        summary.counts_line(),
        "content: {photos_read} photos ({source}), {train_examples} train / {eval_examples} "
        "eval crops of {image_shape}".format(**examples),
    ]
    model = summary.output("Trainer", "model_run")
    metrics_path = os.path.join(model.uri, "metrics.json")
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        lines.append(f"style {metrics['style']}; {metrics['steps']} steps; perceptual loss "
                     f"{metrics['train_loss']:.3f} (mean over training), "
                     f"held-out {metrics['eval_loss']:.3f} (after)")
    return [*lines, *stages.serving_lines(summary)]
