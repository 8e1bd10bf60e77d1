"""`genpipe report`: write one static HTML page about a root (`pipeline.report`)."""

from __future__ import annotations

import argparse
import sys
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `report` to the `genpipe` command line."""
    from pipeline.report.page import DEFAULT_OUT, PAGE
    from pipeline.report.samples import SERVER_TIMEOUT
    from pipeline.status_cli import add_root_options

    parser = subparsers.add_parser(
        "report",
        help="write a static HTML report: versions, metrics, samples, gates, data, lineage",
        description=f"Writes OUT/{PAGE} and its PNGs: for each model its versions and labels, "
        "metrics across versions, samples of its live versions (asked of --server, else the "
        "ones the pipeline wrote), the gate decisions, data statistics, lineage back to the "
        "data, label moves and the schedule history. Open it in any browser; no server needed.",
    )
    add_root_options(parser)
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder to write (default %(default)s)")
    parser.set_defaults(handler=report_command, timeout=SERVER_TIMEOUT)


def report_command(args: argparse.Namespace) -> int:
    from pipeline.report import facts, page, samples
    from pipeline.status_cli import connection

    started = time.monotonic()
    try:
        metadata, client_options = connection(args)
        found = facts.gather(args.root, args.server, metadata, **client_options)
        shown = samples.collect(found.versions, args.server, **client_options)
        html, images = page.render(found, shown, args.server)
        written = page.write(args.out, html, images)
    except ValueError as error:  # a missing root, bad flags, an unreachable store
        print(f"genpipe report: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"genpipe report: --out {args.out}: {error.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {written}: {len(found.models)} model(s), {len(images)} image(s), "
          f"{time.monotonic() - started:.1f} s")
    return 0
