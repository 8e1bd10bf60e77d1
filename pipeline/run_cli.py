"""`genpipe run MODEL`: run a model's pipeline locally, or compile it for Kubeflow Pipelines
(`pipeline.kubeflow`).

Each model registers a `Target` in `TARGETS`: a module with `build_pipeline(options,
for_local_run=...)` returning its tfx Pipeline, and `summarize(summary) -> list[str]` for the
final report. Modules are imported only when that model runs (TFX import is slow).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import warnings
from typing import Any

from pipeline.profiles import PROFILE_NAMES
from pipeline.runner import RunOptions


@dataclasses.dataclass(frozen=True)
class Target:
    """How `genpipe run NAME` builds one model's pipeline."""

    module: str  # provides build_pipeline(options, for_local_run) and summarize(summary)
    help: str
    source_help: str
    extra_options: tuple[str, ...] = ()  # argparse names passed on to build_pipeline by keyword


TARGETS: dict[str, Target] = {
    "text": Target(
        "pipeline.text",
        "Transformer language model with temperature sampling (DLwP 12.1)",
        "offline (bundled movie snippets + clothing reviews, NOT IMDB), an aclImdb folder, "
        "or a folder of .txt files",
    ),
    "vae": Target(
        "pipeline.vae",
        "variational autoencoder with a 2-D latent space of digits (DLwP 12.4)",
        "mnist (default, also 'offline'), fashion_mnist, a folder of IDX files, "
        "or a folder of JPEG/PNG images",
    ),
    "gan": Target(
        "pipeline.gan",
        "DCGAN: digits offline, 64x64 faces from a CelebA folder (DLwP 12.5)",
        "mnist (default, also 'offline'), fashion_mnist, a folder of IDX files, "
        "or a folder of JPEG/PNG images such as CelebA's img_align_celeba",
    ),
    "dream": Target(
        "pipeline.dream",
        "DeepDream exported from ImageNet InceptionV3 weights (DLwP 12.2)",
        "none (no training data)",
    ),
    "style": Target(
        "pipeline.style",
        "Gatys neural style transfer exported from ImageNet VGG19 weights (DLwP 12.3)",
        "none (no training data)",
    ),
    "fast-style": Target(
        "pipeline.fast_style",
        "fast style network trained on content photos for one --style image",
        "offline (bundled skimage + darknet photos) or a folder of JPEG/PNG photos",
        extra_options=("style",),
    ),
}
EXIT_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `run` to the `genpipe` command line."""
    names = list(TARGETS)
    parser = subparsers.add_parser(
        "run",
        help="run a model's TFX pipeline locally (or compile it for Kubeflow)",
        description="Run a model's TFX pipeline with LocalDagRunner: ML Metadata and artifacts "
        "under --root, pushed SavedModels under ROOT/serving/<model>/<version>/. "
        "Models: " + "; ".join(f"{name}: {t.help}" for name, t in TARGETS.items()),
    )
    parser.add_argument("model", metavar="MODEL", nargs="?", help=f"one of: {', '.join(names)}")
    parser.add_argument(
        "--profile", default="demo",
        help=f"settings profile, one of: {', '.join(PROFILE_NAMES)} (default: demo)",
    )
    parser.add_argument("--root", default="runs", help="folder for metadata, artifacts and "
                        "served models (default: runs/)")
    parser.add_argument("--source", "--dataset", dest="source", default="offline",
                        help="training data; for text: " + TARGETS["text"].source_help
                        + "; for vae and gan: " + TARGETS["vae"].source_help
                        + "; for fast-style: " + TARGETS["fast-style"].source_help
                        + " (default: offline)")
    parser.add_argument("--style", default=None, metavar="IMAGE",
                        help="fast-style only: the style image, a painting name (starry_night, "
                        "scream), a texture (brick, grass, gravel) or an image path "
                        "(default: starry_night)")
    parser.add_argument("--no-cache", action="store_true",
                        help="re-run every component instead of reusing cached results")
    parser.add_argument("--compile-only", metavar="FILE.yaml",
                        help="write the Kubeflow pipeline spec instead of running: FILE.yaml "
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


def _compile_options(args: argparse.Namespace) -> Any:
    """The Trainers' accelerator (or None), after checking the compile options."""
    if args.compile_only is None:
        if args.image or args.accelerator:
            raise ValueError("--image and --accelerator apply only with --compile-only")
        return None
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


def run_command(args: argparse.Namespace) -> int:
    """Validates the arguments, then runs or compiles the pipeline; returns the exit code."""
    if args.model is None:
        return _fail(f"MODEL is missing; allowed: {', '.join(TARGETS)}")
    if args.model not in TARGETS:
        return _fail(f"MODEL {args.model!r} is unknown; allowed: {', '.join(TARGETS)}")
    if args.profile not in PROFILE_NAMES:
        return _fail(f"--profile {args.profile!r} is unknown; allowed: {', '.join(PROFILE_NAMES)}")
    extras = {name: getattr(args, name, None) for name in TARGETS[args.model].extra_options}
    if getattr(args, "style", None) is not None and "style" not in extras:
        return _fail(f"--style applies only to fast-style, not to {args.model!r}")
    local = args.compile_only is None
    try:
        accelerator = _compile_options(args)
    except ValueError as error:
        return _fail(str(error))
    _quiet_libraries()
    target = importlib.import_module(TARGETS[args.model].module)
    options = RunOptions(
        profile=args.profile, root=args.root, source=args.source, enable_cache=not args.no_cache
    )
    try:
        pipeline = target.build_pipeline(options, for_local_run=local, **extras)
        if not local:
            return _compile(pipeline, args, accelerator)
    except ValueError as error:
        return _fail(str(error))

    from pipeline import runner

    try:
        summary = runner.run_local(pipeline)
    except Exception as error:  # noqa: BLE001 (report any component failure, then exit non-zero)
        return _fail(f"pipeline {pipeline.pipeline_info.pipeline_name} failed: "
                     f"{type(error).__name__}: {error}", EXIT_FAILED)
    print(f"genpipe run: {summary.pipeline_name} finished in {summary.seconds:.0f} s")
    for line in target.summarize(summary):
        print(f"  {line}")
    return _canary(args.root, summary)


def _canary(root: str, summary: Any) -> int:
    """With a serving target for the root, the version just pushed becomes the canary
    (`pipeline.promotion`); exit 1 when the server does not take it."""
    from pipeline.promotion import canary_after_run

    try:
        outcome = canary_after_run(root, summary, say=lambda line: print(f"  {line}"))
    except ValueError as error:
        return _fail(f"canary: {error}", EXIT_FAILED)
    return EXIT_FAILED if outcome is not None and not outcome.ok else 0
