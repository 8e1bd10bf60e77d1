"""`genpipe schedule add|list|remove|run|run-due` and the foreground `genpipe scheduler`."""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading

from pipeline import schedule
from pipeline.profiles import PROFILE_NAMES
from pipeline.registry import MODEL_NAMES

EXIT_RUN_FAILED = 1


def _root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="runs", help="the --root of `genpipe run`; schedules "
                        "live in ROOT/schedules/ (default: runs/)")


def _grace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grace", type=float, default=schedule.DEFAULT_GRACE, metavar="SECONDS",
        help="how late a due time may be handled and still count as on time; later ones follow "
        f"the entry's --missed policy (default: {schedule.DEFAULT_GRACE:g})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `schedule` and `scheduler` to the `genpipe` command line."""
    parser = subparsers.add_parser(
        "schedule", help="add, list, remove and run pipeline runs on a cron timetable",
        description="Schedule entries of a pipeline root: each runs `genpipe run MODEL --profile "
        "P --root ROOT` for its models on a cron timetable (UTC). `genpipe scheduler` or "
        "`genpipe schedule run-due` (from cron or a timer) starts the due ones.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add an entry")
    add.add_argument("name", metavar="NAME", help="entry name: letters, digits, '.', '_', '-'")
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--models", nargs="+", metavar="MODEL",
                      help=f"models run in turn, one or more of: {', '.join(MODEL_NAMES)}")
    what.add_argument("--command", help="a custom job run instead of `genpipe run` (split "
                      "like a shell command line, run without a shell)")
    add.add_argument("--profile", default="demo",
                     help=f"one of: {', '.join(PROFILE_NAMES)} (default: demo)")
    add.add_argument("--cron", required=True, help=schedule.CRON_HELP)
    add.add_argument("--missed", default="skip",
                     help="due times found later than --grace: 'skip' records them as missed, "
                     "'catch-up' runs once for all of them (default: skip)")
    add.add_argument("--run-args", default="", metavar="'OPTIONS'",
                     help="more `genpipe run` options for every model, e.g. "
                     "--run-args='--source texts/ --no-cache'")
    _root(add)
    add.set_defaults(handler=add_command)

    listing = actions.add_parser("list", help="entries, their next due time and last outcome")
    _root(listing)
    listing.set_defaults(handler=list_command)

    remove = actions.add_parser("remove", help="remove an entry (its history and logs stay)")
    remove.add_argument("name", metavar="NAME")
    _root(remove)
    remove.set_defaults(handler=remove_command)

    run = actions.add_parser("run", help="run an entry now and wait for it (trigger: manual)")
    run.add_argument("name", metavar="NAME")
    _root(run)
    run.set_defaults(handler=run_command)

    due = actions.add_parser("run-due", help="start the due entries once and wait for them "
                             "(for cron or a systemd timer)")
    _root(due)
    _grace(due)
    due.set_defaults(handler=run_due_command)

    scheduler = subparsers.add_parser(
        "scheduler", help="run due schedule entries in the foreground until SIGINT/SIGTERM",
        description="Starts each entry's runs at their due times. The first SIGINT or SIGTERM "
        "stops it starting runs and lets the runs going on end; a second one terminates them.",
    )
    _root(scheduler)
    scheduler.add_argument("--tick", type=float, default=30.0, metavar="SECONDS",
                           help="re-read the entries at least this often (default: 30)")
    _grace(scheduler)
    scheduler.set_defaults(handler=scheduler_command)


def _fail(error: Exception, command: str = "schedule") -> int:
    print(f"genpipe {command}: {error}", file=sys.stderr)
    return 2


_handler: logging.Handler | None = None


def _log_to_stdout() -> None:
    """Prints what the runs do to the current stdout (tests swap it between commands)."""
    global _handler
    if _handler is not None:
        schedule.log.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    schedule.log.addHandler(_handler)
    schedule.log.setLevel(logging.INFO)
    schedule.log.propagate = False


def add_command(args: argparse.Namespace) -> int:
    entry = schedule.Entry(
        name=args.name, cron=args.cron, models=tuple(args.models or ()), profile=args.profile,
        missed=args.missed, run_args=tuple(shlex.split(args.run_args)),
        command=tuple(shlex.split(args.command or "")),
    )
    schedules = schedule.Schedules(args.root)
    try:
        entry = schedules.add(entry)
    except schedule.ScheduleError as error:
        return _fail(error)
    upcoming = schedule.next_due(entry, schedule.utcnow())
    print(f"added {entry.name}; next due {upcoming:%Y-%m-%d %H:%M:%S} UTC "
          f"(in {schedules.entries_path})")
    return 0


def _what(entry: schedule.Entry) -> str:
    if entry.command:
        return shlex.join(entry.command)
    return " ".join(entry.models) + f" ({entry.profile}" + (
        f" {shlex.join(entry.run_args)})" if entry.run_args else ")"
    )


def _last(record: schedule.Record | None) -> str:
    if record is None:
        return "never ran"
    codes = "" if not record.exit_codes else " " + ",".join(
        f"{label}={code}" for label, code in record.exit_codes.items()
    )
    return f"{record.status} {record.at[:19].replace('T', ' ')}{codes}"


def list_command(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    schedules = schedule.Schedules(args.root)
    try:
        entries = schedules.entries()
        now = schedule.utcnow()
        rows = [
            [entry.name, _what(entry), entry.cron, entry.missed,
             f"{schedule.next_due(entry, now):%Y-%m-%d %H:%M:%S}",
             _last(schedule.last_outcome(schedules, entry))]
            for entry in entries
        ]
    except schedule.ScheduleError as error:
        return _fail(error)
    if not rows:
        print(f"no schedules under {schedules.root}; add one with `genpipe schedule add`")
        return 0
    print(tabulate(rows, headers=["name", "runs", "cron (UTC)", "missed", "next due (UTC)",
                                  "last (UTC)"]))
    return 0


def remove_command(args: argparse.Namespace) -> int:
    schedules = schedule.Schedules(args.root)
    try:
        schedules.remove(args.name)
    except schedule.ScheduleError as error:
        return _fail(error)
    print(f"removed {args.name}; its history and logs stay in {schedules.folder}")
    return 0


def _exit_code(outcomes: list[schedule.Record]) -> int:
    ok = all(outcome.status == schedule.SUCCEEDED for outcome in outcomes)
    return 0 if ok else EXIT_RUN_FAILED


def run_command(args: argparse.Namespace) -> int:
    _log_to_stdout()
    runner = schedule.Runner(schedule.Schedules(args.root))
    try:
        run = runner.start_manual(args.name)
    except schedule.ScheduleError as error:
        return _fail(error)
    if run is None:
        return EXIT_RUN_FAILED
    runner.wait()
    return _exit_code(runner.outcomes)


def run_due_command(args: argparse.Namespace) -> int:
    _log_to_stdout()
    try:
        runner = schedule.Runner(schedule.Schedules(args.root), grace=args.grace)
        runner.start_due()
    except schedule.ScheduleError as error:
        return _fail(error)
    runner.wait()
    return _exit_code(runner.outcomes)


def scheduler_command(args: argparse.Namespace) -> int:
    if args.tick <= 0:
        return _fail(ValueError(f"--tick must be more than 0 seconds; got {args.tick:g}"),
                     "scheduler")
    _log_to_stdout()
    stop, kill = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        (kill if stop.is_set() else stop).set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    try:
        runner = schedule.Runner(schedule.Schedules(args.root), grace=args.grace)
        runner.serve(args.tick, stop, kill)
    except schedule.ScheduleError as error:
        return _fail(error, "scheduler")
    return 0
