"""`genpipe serving-target`, `canary`, `promote` and `rollback`: version labels on a live model
server (pipeline/promotion.py; docs/operations.md, "Promotion and rollback")."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

EXIT_REFUSED = 1  # the server did not take the move; every label stays where it was
EXIT_USAGE = 2


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def _root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="runs", help="the --root of `genpipe run` "
                        "(default: runs/)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `serving-target`, `canary`, `promote` and `rollback` to the `genpipe` command line."""
    from pipeline.promotion import DEFAULT_WAIT_SECONDS

    target = subparsers.add_parser(
        "serving-target", help="name the model server a root's versions are promoted on",
        description="Write or show ROOT/serving.json: the model server that `genpipe canary`, "
        "`promote` and `rollback` move version labels on, and the models.config kept for it.",
    )
    actions = target.add_subparsers(dest="target_action", metavar="ACTION", required=True)
    set_parser = actions.add_parser("set", help="set the root's model server")
    _root(set_parser)
    set_parser.add_argument("--server", required=True, help="HOST:PORT of its gRPC API")
    set_parser.add_argument("--models-config", help="the models.config kept for it (default: "
                            "ROOT/serving/models.config; written when missing)")
    set_parser.add_argument("--base-path", help="where the server sees ROOT/serving, e.g. "
                            "/models in the tensorflow/serving container (default: the same path)")
    set_parser.add_argument("--root-cert", help="PEM file of the CA of a TLS server")
    set_parser.add_argument("--token-file", help="file holding the server's bearer token")
    show_parser = actions.add_parser("show", help="print the root's serving target")
    _root(show_parser)
    target.set_defaults(handler=serving_target_command)

    moves = {
        "canary": ("load a pushed version, check it with its warmup requests, label it canary",
                   "--version", "version to label (default: the latest pushed)"),
        "promote": ("label a version stable (default: the canary)",
                    "--version", "version to label (default: the canary)"),
        "rollback": ("move stable back to the previous good version",
                     "--to", "version to label (default: the one stable held before, skipping "
                     "versions rolled back from)"),
    }
    for action, (help_text, flag, flag_help) in moves.items():
        parser = subparsers.add_parser(action, help=help_text, description=help_text + "; "
                                       "through HandleReloadConfigRequest on the serving "
                                       "target's models.config, recorded in ML Metadata.")
        parser.add_argument("model", metavar="MODEL", help="served model name, e.g. text_lm")
        parser.add_argument(flag, dest="version", type=int, metavar="V", help=flag_help)
        _root(parser)
        parser.add_argument("--wait", type=_positive, default=DEFAULT_WAIT_SECONDS,
                            help="seconds to wait for the version to be AVAILABLE, and at "
                            f"most for any call to the server (default: {DEFAULT_WAIT_SECONDS:g})")
        parser.set_defaults(handler=move_command, action=action)


def _fail(command: str, message: str) -> int:
    print(f"genpipe {command}: {message}", file=sys.stderr)
    return EXIT_USAGE


def serving_target_command(args: argparse.Namespace) -> int:
    from pipeline import promotion

    try:
        if args.target_action == "show":
            target = promotion.load_target(args.root)
            if target is None:
                return _fail("serving-target", f"--root {args.root} has no serving target")
        else:
            target = promotion.set_target(
                args.root, args.server, models_config=args.models_config,
                base_path=args.base_path, root_cert=args.root_cert,
                token_file=args.token_file,
            )
            print(f"wrote {promotion.target_path(args.root)}; serve the kept config with "
                  f"`genpipe serve --model_config_file {target.models_config}`")
    except ValueError as error:
        return _fail("serving-target", str(error))
    print(json.dumps(dataclasses.asdict(target), indent=2))
    return 0


def move_command(args: argparse.Namespace) -> int:
    from pipeline import promotion

    try:
        outcome = promotion.move_label(
            args.root, args.model, args.action, args.version, wait_seconds=args.wait
        )
    except ValueError as error:
        return _fail(args.action, str(error))
    return 0 if outcome.ok else EXIT_REFUSED
