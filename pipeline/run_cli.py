"""`genpipe run MODEL[,MODEL...]|all`: run model pipelines locally, one after another with one
ML Metadata store (the root's), or compile one for Kubeflow Pipelines (`pipeline.kubeflow`).

The models are `pipeline.registry`'s; `pipeline.factory` builds their pipelines (TFX is imported
only once a pipeline is built: the import is slow).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from typing import Any

from pipeline.profiles import PROFILE_NAMES
from pipeline.registry import ALL, MODEL_NAMES, MODELS, OFFLINE, ModelPipeline, parse_models
from pipeline.runner import BEAM_ARGS_EXAMPLE, DEFAULT_BEAM_ARGS, RunOptions, parse_beam_args

EXIT_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `run` to the `genpipe` command line."""
    names = ", ".join(MODEL_NAMES)
    parser = subparsers.add_parser(
        "run",
        help="run models' TFX pipelines locally (or compile one for Kubeflow)",
        description="Run model pipelines with LocalDagRunner: ML Metadata and artifacts "
        "under --root, pushed SavedModels under ROOT/serving/<model>/<version>/. Several "
        "models (vae,gan or all) run one after another, sharing the root's ML Metadata "
        "store; each one's summary is printed, a failing one is reported and the others still "
        "run (exit 1 if any failed). Models: "
        + "; ".join(f"{name}: {model.help}" for name, model in MODELS.items()),
    )
    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help=f"one of: {names}; several joined by commas (vae,gan); or {ALL}")
    parser.add_argument(
        "--profile", default="demo",
        help=f"settings profile, one of: {', '.join(PROFILE_NAMES)} (default: demo)",
    )
    parser.add_argument("--root", default="runs", help="folder for metadata, artifacts and "
                        "served models (default: runs/)")
    parser.add_argument("--source", "--dataset", dest="source", default="offline",
                        help="training data; for text: " + MODELS["text"].source_help
                        + "; for vae and gan: " + MODELS["vae"].source_help
                        + "; for fast-style: " + MODELS["fast-style"].source_help
                        + " (default: offline; with several models, dream and style, which "
                        "have no training data, ignore it)")
    parser.add_argument("--style", default=None, metavar="IMAGE",
                        help="fast-style only: the style image, a painting name (starry_night, "
                        "scream), a texture (brick, grass, gravel) or an image path "
                        "(default: starry_night)")
    parser.add_argument("--no-cache", action="store_true",
                        help="re-run every component instead of reusing cached results")
    parser.add_argument("--accept-drift", action="store_true",
                        help="skip the comparison with the data statistics of the last run that "
                        "passed the data checks, when a change of the source is intended (the "
                        "data is still checked against the curated schema; this run's "
                        "statistics become the next baseline)")
    parser.add_argument(
        "--beam_pipeline_args", action="append", metavar="ARGS",
        help="Beam options for every Beam-powered component of every pipeline, local or "
        "compiled (repeatable; a quoted value is split like a shell would), replacing the "
        f"default {' '.join(DEFAULT_BEAM_ARGS)} (DirectRunner in this process). E.g. "
        f"--beam_pipeline_args='{BEAM_ARGS_EXAMPLE}', or Dataflow's --runner=DataflowRunner "
        "--project=P --region=R --temp_location=gs://B/tmp (docs/kubeflow.md). A single "
        "option needs the = form: --beam_pipeline_args=--name=value")
    parser.add_argument("--compile-only", metavar="FILE.yaml",
                        help="write the Kubeflow pipeline spec of one MODEL instead of running "
                        "(several models are refused: compile each to its own file): FILE.yaml "
                        "(the PipelineSpec, for Kubeflow and Vertex) or FILE.json (TFX's "
                        "PipelineJob, Vertex); --root may then be gs://...")
    parser.add_argument("--image", help="with --compile-only (required): the container image "
                        "of every component, e.g. what `make image` built, pushed to a registry")
    parser.add_argument("--accelerator", metavar="TYPE[:COUNT]",
                        help="with --compile-only: accelerators for the Trainer, e.g. "
                        "nvidia.com/gpu:1 (Kubeflow) or NVIDIA_TESLA_T4:1 (Vertex)")
    parser.set_defaults(handler=run_command)


def _fail(message: str, code: int = 2) -> int:
    print(f"genpipe run: {message}", file=sys.stderr)
    return code


def _quiet_libraries() -> None:
    """Hides the pipeline libraries' FutureWarnings (TensorFlow's log level: `genpipe`'s entry
    point)."""
    warnings.filterwarnings("ignore", category=FutureWarning)


def _compile_options(args: argparse.Namespace, models: list[ModelPipeline]) -> Any:
    """The Trainers' accelerator (or None), after checking the compile options."""
    if args.compile_only is None:
        if args.image or args.accelerator:
            raise ValueError("--image and --accelerator apply only with --compile-only")
        return None
    if len(models) > 1:
        raise ValueError(f"--compile-only writes the spec of one MODEL, not of "
                         f"{', '.join(m.name for m in models)}: compile each to its own file")
    from pipeline import kubeflow

    kubeflow.check_spec_path(args.compile_only)
    kubeflow.check_image(args.image)
    return kubeflow.Accelerator.parse(args.accelerator) if args.accelerator else None


def _compile(pipeline: Any, args: argparse.Namespace, accelerator: Any) -> int:
    from pipeline import kubeflow

    spec = kubeflow.compile_pipeline(pipeline, args.compile_only, args.image, accelerator)
    inputs = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    print(f"genpipe run: wrote the Kubeflow pipeline spec {args.compile_only} (image "
          f"{args.image}; runtime parameters: {', '.join(sorted(inputs)) or 'none'})")
    return 0


def selected_models(args: argparse.Namespace) -> list[ModelPipeline]:
    """The models of the MODEL argument, after checking the options that do not need TFX;
    ValueError naming the option and its allowed values."""
    if args.model is None:
        raise ValueError(f"MODEL is missing; allowed: {ALL}, {', '.join(MODEL_NAMES)} or "
                         "several joined by commas (vae,gan)")
    models = parse_models(args.model)
    if args.profile not in PROFILE_NAMES:
        raise ValueError(f"--profile {args.profile!r} is unknown; allowed: "
                         f"{', '.join(PROFILE_NAMES)}")
    if args.style is not None and not any(model.styled for model in models):
        raise ValueError(f"--style applies only to fast-style, not to {args.model!r}")
    return models


def build_pipelines(args: argparse.Namespace, models: list[ModelPipeline]
                    ) -> list[tuple[ModelPipeline, Any]]:
    """Each model's pipeline for these arguments (ValueError, prefixed with the model's name
    when there are several, for a bad source, style or Beam option)."""
    from pipeline.factory import build_pipeline

    options = RunOptions(profile=args.profile, root=args.root, source=args.source,
                         enable_cache=not args.no_cache, accept_drift=args.accept_drift,
                         beam_pipeline_args=parse_beam_args(args.beam_pipeline_args))
    pipelines = []
    for model in models:
        own = dataclasses.replace(options, style=args.style if model.styled else None)
        if len(models) > 1 and model.stages.source_knob is None:
            own = dataclasses.replace(own, source=OFFLINE)  # --source is for the others
        try:
            pipelines.append((model, build_pipeline(model, own,
                                                    for_local_run=args.compile_only is None)))
        except ValueError as error:
            raise ValueError(f"{model.name}: {error}" if len(models) > 1 else str(error)) \
                from None
    return pipelines


def run_command(args: argparse.Namespace) -> int:
    """Validates the arguments, then runs the pipelines (or compiles one); the exit code."""
    try:
        models = selected_models(args)
        accelerator = _compile_options(args, models)
        _quiet_libraries()
        pipelines = build_pipelines(args, models)
        if args.compile_only is not None:
            return _compile(pipelines[0][1], args, accelerator)
    except ValueError as error:
        return _fail(str(error))
    failed = []
    for model, pipeline in pipelines:
        if _run_one(model, pipeline, args.root) != 0:
            failed.append(pipeline.pipeline_info.pipeline_name)
    if len(pipelines) > 1:
        print(f"genpipe run: {len(pipelines) - len(failed)} of {len(pipelines)} pipelines "
              f"succeeded" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return EXIT_FAILED if failed else 0


def _run_one(model: ModelPipeline, pipeline: Any, root: str) -> int:
    """Runs one pipeline, prints its summary and makes its pushed version the canary."""
    from pipeline import runner

    try:
        summary = runner.run_local(pipeline)
    except Exception as error:  # noqa: BLE001 (report any component failure, then go on)
        return _fail(f"pipeline {pipeline.pipeline_info.pipeline_name} failed: "
                     f"{type(error).__name__}: {error}", EXIT_FAILED)
    print(f"genpipe run: {summary.pipeline_name} finished in {summary.seconds:.0f} s")
    for line in model.summarize(summary):
        print(f"  {line}")
    return _canary(root, summary)


def _canary(root: str, summary: Any) -> int:
    """With a serving target for the root, the version just pushed becomes the canary
    (`pipeline.promotion`); exit 1 when the server does not take it."""
    from pipeline.promotion import canary_after_run

    try:
        outcome = canary_after_run(root, summary, say=lambda line: print(f"  {line}"))
    except ValueError as error:
        return _fail(f"canary: {error}", EXIT_FAILED)
    return EXIT_FAILED if outcome is not None and not outcome.ok else 0
