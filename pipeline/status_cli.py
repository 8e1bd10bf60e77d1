"""`genpipe status`: model versions, their metrics and lineage, and which one is live."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

MOVES_SHOWN = 10  # the latest label moves printed under the table
REASON_CHARS = 80  # of a refused move's reason (the `genpipe.LabelMove` record has it all)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `status` to the `genpipe` command line."""
    parser = subparsers.add_parser(
        "status", help="list model versions, their metrics and lineage, and which one is live"
    )
    parser.add_argument(
        "--root", default="runs", help="the --root of `genpipe run` (default: runs/)"
    )
    parser.add_argument(
        "--server", help="host:port of a model server to ask which versions are live"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the server"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=status_command)


def _state(status) -> str:
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

    from pipeline.promotion import label_moves
    from pipeline.status import model_status

    try:
        statuses = model_status(args.root, args.server, timeout=args.timeout)
    except ValueError as error:  # a bad serving target or kept models.config
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
            _state(s),
            ", ".join(s.labels),
            s.pushed_at,
            s.pipeline,
            ", ".join(f"{k}={v:.4g}" for k, v in sorted(s.metrics.items())),
            s.serving_check.split(":")[0],  # "blessed" / "not blessed"; --json has it all
            s.trained_on,
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
            ],
        )
    )
    moves = label_moves(args.root)[-MOVES_SHOWN:]
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
