"""`genpipe status`: model versions, their metrics and lineage, and which one is live."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

MOVES_SHOWN = 10  # the latest label moves printed under the table
REASON_CHARS = 80  # of a refused move's reason (the `genpipe.LabelMove` record has it all)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `status` to the `genpipe` command line."""
    parser = subparsers.add_parser(
        "status", help="list model versions, their metrics and lineage, and which one is live"
    )
    add_root_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=status_command)


def add_root_options(parser: argparse.ArgumentParser) -> None:
    """--root, the remote ML Metadata flags and the model server flags (`genpipe report` too)."""
    from pipeline.status import DEFAULT_METADATA_TIMEOUT

    parser.add_argument(
        "--root", default="runs",
        help="the --root of `genpipe run`: a folder or a URL such as gs://bucket/genpipe "
        "(default: runs/)",
    )
    parser.add_argument(
        "--metadata-host", help="host of a remote ML Metadata store (metadata_store_server) "
        "to read instead of ROOT/metadata.sqlite"
    )
    parser.add_argument("--metadata-port", type=int, help="its gRPC port (with --metadata-host)")
    parser.add_argument(
        "--server", help="host:port of a model server to ask which versions are live"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_METADATA_TIMEOUT,
        help="seconds to wait for the server and the metadata store (default %(default)s)",
    )
    parser.add_argument(
        "--root-cert", help="PEM CA/certificate of a TLS model server and metadata store"
    )
    parser.add_argument("--token-file", help="bearer token file for the model server")


def connection(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(the `MetadataSource` or None, the `ModelServerClient` options) of the parsed flags;
    ValueError names a bad or missing flag."""
    from client.cli import token as bearer_token  # as `generate`: file or environment
    from pipeline.status import MetadataSource

    metadata = None
    if (args.metadata_host is None) != (args.metadata_port is None):
        raise ValueError("--metadata-host and --metadata-port go together")
    if args.metadata_host is not None:
        metadata = MetadataSource(args.metadata_host, args.metadata_port, args.root_cert,
                                  args.timeout)
        metadata.client_config()  # checks the port and reads the certificate now
    try:
        token = bearer_token(args)
    except OSError as error:
        raise ValueError(f"--token-file {args.token_file}: {error.strerror}") from None
    return metadata, {"timeout": args.timeout, "root_cert": args.root_cert, "token": token}


def state_text(status) -> str:
    if status.partial:
        return "being pushed"
    if status.server_state:
        return {"AVAILABLE": "LIVE"}.get(status.server_state, status.server_state.lower())
    if status.server_error:
        return "not served"
    return "on disk" if status.on_disk else "deleted"


def _short(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def status_command(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from pipeline.status import label_moves, model_status

    try:
        metadata, client_options = connection(args)
        statuses = model_status(args.root, args.server, metadata, **client_options)
        moves = label_moves(args.root, metadata)[-MOVES_SHOWN:]
    except ValueError as error:  # a missing root, bad flags, serving target or models.config
        print(f"genpipe status: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{**dataclasses.asdict(s), "live": s.live} for s in statuses], indent=2))
        return 0
    if not statuses:
        print(f"no pushed models under {args.root}; run `genpipe run MODEL --root {args.root}`")
        return 0
    rows = [
        [
            s.model,
            s.version,
            state_text(s),
            ", ".join(s.labels),
            s.pushed_at,
            s.pipeline,
            ", ".join(f"{k}={v:.4g}" for k, v in sorted(s.metrics.items())),
            s.serving_check.split(":")[0],  # "blessed" / "not blessed"; --json has it all
            s.trained_on,
            s.tensorboard,
        ]
        for s in statuses
    ]
    print(
        tabulate(
            rows,
            headers=[
                "model",
                "version",
                "state",
                "labels",
                "pushed (UTC)",
                "pipeline",
                "metrics",
                "serving check",
                "trained on",
                "TensorBoard logs",
            ],
        )
    )
    if moves:
        print("\nlabel moves (latest last; `genpipe canary|promote|rollback`):")
        rows = [
            [m.at, m.user, m.model, m.action, m.label,
             f"{'none' if m.from_version is None else m.from_version} -> {m.to_version}",
             "moved" if m.moved else "refused: " + _short(m.message.split(": ", 1)[-1])]
            for m in moves
        ]
        print(tabulate(rows, headers=["when (UTC)", "who", "model", "action", "label",
                                      "from -> to", "outcome"]))
    if args.server is None:
        print("\n(pass --server host:port to see which versions a model server has live)")
    return 0
