"""The ``genpipe`` command line: one entry point, a subcommand per job.

Each area registers its own subcommands (``register(subparsers)``); heavy imports (TensorFlow,
TFX) happen inside the handlers so ``genpipe --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence

# Subcommands a later piece of work fills in; until then they say so plainly and exit non-zero.
PLANNED = {
    "run": "run a pipeline: genpipe run MODEL --profile smoke|demo|book --root DIR",
    "serve": "serve pushed models over TF Serving's gRPC and REST API",
    "generate": "ask a running server for generations (text, digits, faces, dream, style)",
    "status": "list model versions, their metrics and lineage, and which one is live",
    "report": "write a static HTML report with sample images and training curves",
}
NOT_BUILT_EXIT = 3


def _not_built(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        print(
            f"genpipe {name}: not built yet in this version of genpipe. "
            "See the open issues for its status; `genpipe --help` lists what works.",
            file=sys.stderr,
        )
        return NOT_BUILT_EXIT

    return handler


def _assets(args: argparse.Namespace) -> int:
    from sources.assets import asset_report, format_report

    statuses = asset_report()
    print(format_report(statuses))
    missing = [s for s in statuses if not s.present]
    if missing:
        print(f"\n{len(missing)} asset(s) missing; the last column says how to install each.")
    return 1 if args.strict and missing else 0


def _register_assets(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "assets", help="report which offline datasets and weights are present"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when any asset is missing")
    parser.set_defaults(handler=_assets)


def _registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    """The ``register`` functions of the areas that provide subcommands."""
    import importlib

    found = []
    for module in (
        "pipeline.run_cli", "serving.cli", "client.cli", "pipeline.status_cli",
        "pipeline.schedule_cli", "pipeline.promotion_cli", "pipeline.kubeflow_cli",
        "pipeline.report_cli", "pipeline.schema_cli",
    ):
        try:
            found.append(importlib.import_module(module).register)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    return found


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="genpipe",
        description="Generative deep learning (DLwP chapter 12) as TFX pipelines served by "
        "TensorFlow Serving.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_assets(subparsers)
    for register in _registrars():
        register(subparsers)
    for name, help_text in PLANNED.items():
        if name not in subparsers.choices:
            sub = subparsers.add_parser(name, help=f"{help_text} (not built yet)")
            sub.set_defaults(handler=_not_built(name))
    return parser


def quiet_libraries() -> None:
    """Keep library start-up noise off every command's terminal; call it before anything imports
    TensorFlow (the entry points do: ``genpipe``, ``python -m serving``, ``python -m client``).

    Level 3 also hides the CUDA plugins' "Unable to register cuDNN/cuBLAS/cuFFT factory" lines,
    which TensorFlow logs as errors on every start; a level the caller set is kept. The Google
    client libraries warn that this Python version is past its support window on import.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings(
        "ignore", message=r"You are using a (non-supported )?Python version", category=FutureWarning
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genpipe`` console script."""
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
