"""Schedules: `genpipe run` on a cron timetable, kept as data under the pipeline root.

An entry names models, a profile and a cron expression (UTC); a run of it runs
`genpipe run MODEL --profile P --root ROOT` for each model in turn, or the entry's own
`command`. Entries, histories, locks and logs live under `<root>/schedules/`; the files and
the policies (due times, grace, missed runs, overlap, crashes) are in docs/operations.md.
No TensorFlow or TFX here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import portalocker
from croniter import CroniterError, croniter

from pipeline.files import write_atomically
from pipeline.profiles import PROFILE_NAMES
from pipeline.registry import MODEL_NAMES

MISSED_POLICIES = ("skip", "catch-up")
# Statuses of history records: a run's start, its outcomes, and due times that did not run.
RUNNING, SUCCEEDED, FAILED, INTERRUPTED, LOST = (
    "running", "succeeded", "failed", "interrupted", "lost"
)
OVERLAP, MISSED = "overlap", "missed"
DEFAULT_GRACE = 300.0  # seconds a due time may be late and still count as on time
CRON_HELP = (
    "5 fields 'minute hour day-of-month month day-of-week' in UTC, e.g. '0 3 * * *' (03:00 "
    "daily), or 6 with seconds first (Kubeflow's form), e.g. '*/30 * * * * *'"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

log = logging.getLogger("genpipe.schedule")


class ScheduleError(ValueError):
    """Bad input or a damaged schedules file; the message names the field and what is allowed."""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One schedule: what to run and when. Its root is the root whose schedules hold it."""

    name: str
    cron: str
    models: tuple[str, ...] = ()
    profile: str = "demo"
    missed: str = "skip"  # one of MISSED_POLICIES
    run_args: tuple[str, ...] = ()  # more `genpipe run` options, e.g. ("--source", "texts/")
    command: tuple[str, ...] = ()  # a custom job run instead of `genpipe run` (then no models)
    created: str = ""  # UTC ISO 8601; due times before it never run

    @classmethod
    def from_json(cls, data: dict) -> Entry:
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ScheduleError(f"unknown entry fields {unknown}; allowed: {sorted(fields)}")
        tuples = {k: tuple(v) for k, v in data.items() if k in ("models", "run_args", "command")}
        return cls(**{**data, **tuples})


def _cron(expression: str, start: datetime.datetime) -> croniter:
    return croniter(expression, start, second_at_beginning=True)


def next_due(entry: Entry, now: datetime.datetime) -> datetime.datetime:
    """The first due time after `now`."""
    return _cron(entry.cron, now).get_next(datetime.datetime)


def last_due(entry: Entry, now: datetime.datetime) -> datetime.datetime:
    """The latest due time before `now`."""
    return _cron(entry.cron, now).get_prev(datetime.datetime)


def validate(entry: Entry) -> None:
    """Raises ScheduleError naming the first bad field (as its `genpipe schedule add` flag)."""
    if not _NAME.fullmatch(entry.name):
        raise ScheduleError(
            f"NAME {entry.name!r} is not allowed: 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if bool(entry.models) == bool(entry.command):
        raise ScheduleError("give either --models (genpipe run) or --command (a custom job)")
    unknown = [model for model in entry.models if model not in MODEL_NAMES]
    if unknown:
        names = ", ".join(repr(model) for model in unknown)
        raise ScheduleError(f"--models {names}: unknown; allowed: {', '.join(MODEL_NAMES)}")
    if entry.profile not in PROFILE_NAMES:
        raise ScheduleError(
            f"--profile {entry.profile!r} is unknown; allowed: {', '.join(PROFILE_NAMES)}"
        )
    if entry.missed not in MISSED_POLICIES:
        raise ScheduleError(
            f"--missed {entry.missed!r} is unknown; allowed: {', '.join(MISSED_POLICIES)}"
        )
    try:
        _parse_time(entry.created)
    except (TypeError, ValueError) as error:
        raise ScheduleError(f"created {entry.created!r} is not a UTC ISO 8601 time") from error
    try:
        next_due(entry, utcnow())
    except (CroniterError, ValueError) as error:
        raise ScheduleError(
            f"--cron {entry.cron!r} is not a usable cron expression ({error}); use {CRON_HELP}"
        ) from error


def check_run_args(entry: Entry) -> None:
    """Raises ScheduleError unless `genpipe run` accepts the entry's extra options (the run
    parser itself judges them; its own error goes to stderr first)."""
    import argparse

    from pipeline import run_cli

    if not entry.run_args:
        return
    parser = argparse.ArgumentParser(prog="genpipe")
    run_cli.register(parser.add_subparsers())
    fixed = ["run", entry.models[0], "--profile", entry.profile, "--root", "ROOT"]
    try:
        args = parser.parse_args([*fixed, *entry.run_args])
    except SystemExit as error:
        raise ScheduleError(
            f"--run-args {shlex.join(entry.run_args)!r} are not options of `genpipe run` "
            "(see `genpipe run --help`)"
        ) from error
    if (args.profile, args.root, args.compile_only) != (entry.profile, "ROOT", None):
        raise ScheduleError(
            "--run-args may not set --profile, --root or --compile-only: the entry's "
            "--profile and the schedule's --root are used"
        )


def genpipe_executable() -> str:
    """The `genpipe` console script of this Python environment."""
    return str(Path(sys.executable).parent / "genpipe")


def commands(entry: Entry, root: str) -> list[tuple[str, list[str]]]:
    """The (label, argv) pairs one run of `entry` executes in turn."""
    if entry.command:
        return [("command", list(entry.command))]
    return [
        (model, [genpipe_executable(), "run", model, "--profile", entry.profile,
                 "--root", root, *entry.run_args])
        for model in entry.models
    ]


@dataclasses.dataclass(frozen=True)
class Record:
    """One line of an entry's history."""

    status: str  # RUNNING, an outcome (SUCCEEDED, FAILED, INTERRUPTED, LOST), OVERLAP or MISSED
    trigger: str  # scheduled, catch-up or manual
    due: str | None  # the due time this record handles (UTC ISO); None for manual runs
    at: str  # when the record was written
    run: str | None = None  # run id, shared by a run's RUNNING record and its outcome
    start: str | None = None
    end: str | None = None
    exit_codes: dict[str, int] | None = None  # by model (or "command"), in run order
    log: str | None = None
    pid: int | None = None  # the process that ran it (the scheduler, run-due or `run`)
    detail: str = ""


class RunLock:
    """The OS lock (flock) that marks a run of an entry in progress.

    Each command of the run inherits the locked descriptor, so the lock is held while either
    the runner or the command is alive, and the kernel drops it when both have exited, however
    they ended: a killed run never leaves it behind.
    """

    def __init__(self, path: Path):
        self.path = path
        self.file = None

    def acquire(self) -> bool:
        """Takes the lock if it is free (never waits)."""
        file = open(self.path, "a+", encoding="utf-8")  # held until release()
        try:
            flags = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
            portalocker.lock(file, flags)
        except portalocker.AlreadyLocked:
            file.close()
            return False
        self.file = file
        return True

    def describe(self, text: str) -> None:
        """Writes who holds the lock into the lock file, for people to read."""
        self.file.truncate(0)
        self.file.write(text + "\n")
        self.file.flush()

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return ""

    def release(self) -> None:
        self.file.truncate(0)  # no stale holder text once free
        portalocker.unlock(self.file)
        self.file.close()
        self.file = None


class Schedules:
    """The schedule entries of one pipeline root, and their histories, locks and logs."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.folder = Path(self.root) / "schedules"
        self.entries_path = self.folder / "entries.json"

    def history_path(self, name: str) -> Path:
        return self.folder / f"{name}.jsonl"

    def lock(self, name: str) -> RunLock:
        return RunLock(self.folder / f"{name}.lock")

    def log_dir(self, name: str) -> Path:
        return self.folder / "logs" / name

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Serializes edits of the entries and decisions to start runs across processes."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as file:
            portalocker.lock(file, portalocker.LockFlags.EXCLUSIVE)
            try:
                yield
            finally:
                portalocker.unlock(file)

    def entries(self) -> list[Entry]:
        if not self.entries_path.exists():
            return []
        try:
            data = json.loads(self.entries_path.read_text(encoding="utf-8"))
            entries = [Entry.from_json(item) for item in data["entries"]]
            for entry in entries:
                validate(entry)
        except (ValueError, KeyError, TypeError) as error:
            raise ScheduleError(f"{self.entries_path} is damaged: {error}") from error
        return entries

    def entry(self, name: str) -> Entry:
        entries = {entry.name: entry for entry in self.entries()}
        if name not in entries:
            raise ScheduleError(
                f"NAME {name!r} is not a schedule under {self.root}; "
                f"existing: {', '.join(entries) or 'none'}"
            )
        return entries[name]

    def _write(self, entries: Sequence[Entry]) -> None:
        data = {"entries": [dataclasses.asdict(entry) for entry in entries]}
        write_atomically(self.entries_path, json.dumps(data, indent=2) + "\n")

    def add(self, entry: Entry) -> Entry:
        """Validates and stores a new entry (its `created` time set now); returns it."""
        entry = dataclasses.replace(entry, created=_iso(utcnow()))
        validate(entry)
        check_run_args(entry)
        with self.guard():
            entries = self.entries()
            if any(existing.name == entry.name for existing in entries):
                raise ScheduleError(
                    f"NAME {entry.name!r} already exists under {self.root}; "
                    "remove it first or pick another name"
                )
            self._write([*entries, entry])
        return entry

    def remove(self, name: str) -> None:
        """Removes the entry; its history and logs stay."""
        with self.guard():
            self.entry(name)
            self._write([entry for entry in self.entries() if entry.name != name])

    def history(self, name: str) -> list[Record]:
        path = self.history_path(name)
        if not path.exists():
            return []
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                records.append(Record(**json.loads(line)))
            except (ValueError, TypeError) as error:
                raise ScheduleError(f"{path}:{number} is not a history record: {error}") from None
        return records

    def append(self, name: str, record: Record) -> None:
        """Appends one record (one short write to a file opened for appending)."""
        with open(self.history_path(name), "a", encoding="utf-8") as file:
            file.write(json.dumps(dataclasses.asdict(record)) + "\n")


def _cursor(entry: Entry, history: Sequence[Record]) -> datetime.datetime:
    """The latest due time already handled (run, skipped or missed); `created` at first."""
    handled = [_parse_time(r.due) for r in history if r.due is not None and r.trigger != "manual"]
    return max([_parse_time(entry.created), *handled])


def open_runs(history: Sequence[Record]) -> list[Record]:
    """RUNNING records with no outcome after them."""
    last: dict[str, Record] = {}
    for record in history:
        if record.run is not None:
            last[record.run] = record
    return [record for record in last.values() if record.status == RUNNING]


class Run:
    """One run of an entry: its commands one after another, each in its own session with its
    output in the run's log, the entry's lock held until the last one ends."""

    def __init__(self, schedules: Schedules, entry: Entry, trigger: str, due: str | None,
                 lock: RunLock):
        now = utcnow()
        self.schedules, self.entry, self.lock = schedules, entry, lock
        self.id = now.strftime("%Y%m%dT%H%M%S.%fZ")
        log_dir = schedules.log_dir(entry.name)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.id}.log"
        self.output = open(self.log_path, "ab")  # closed when the run ends (poll)
        self.steps = commands(entry, schedules.root)
        self.exit_codes: dict[str, int] = {}
        self.process: subprocess.Popen | None = None
        self.label = ""
        self.terminated = False
        self.started = time.monotonic()
        self.record = Record(RUNNING, trigger, due, _iso(now), run=self.id, start=_iso(now),
                             log=str(self.log_path), pid=os.getpid())
        schedules.append(entry.name, self.record)
        what = f"due {due}, {trigger}" if due else trigger
        log.info("schedule %s: run %s started (%s); log %s", entry.name, self.id, what,
                 self.log_path)
        self._start_next()

    def _note(self, text: str) -> None:
        self.output.write(f"[genpipe schedule {_iso(utcnow())}] {text}\n".encode())
        self.output.flush()

    def _start_next(self) -> bool:
        """Starts the next command; False when none is left."""
        while self.steps and not self.terminated:
            self.label, argv = self.steps.pop(0)
            self._note(f"$ {shlex.join(argv)}")
            try:
                self.process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=self.output, stderr=subprocess.STDOUT,
                    pass_fds=(self.lock.file.fileno(),), start_new_session=True,
                )
            except OSError as error:
                self._note(f"could not start: {error}")
                self.exit_codes[self.label] = 127  # the shell's "command not found"
                continue
            self.lock.describe(f"pid {os.getpid()} run {self.id} child {self.process.pid} "
                               f"({self.label}) since {_iso(utcnow())}")
            return True
        self.process = None
        return False

    def poll(self) -> Record | None:
        """Advances the run; returns its outcome record once it has ended."""
        while self.process is not None:
            code = self.process.poll()
            if code is None:
                return None
            self.exit_codes[self.label] = code
            self._note(f"exit code {code}")
            self._start_next()
        if self.terminated:
            status = INTERRUPTED
        else:
            status = SUCCEEDED if not any(self.exit_codes.values()) else FAILED
        now = _iso(utcnow())
        outcome = dataclasses.replace(self.record, status=status, at=now, end=now,
                                      exit_codes=self.exit_codes)
        self.schedules.append(self.entry.name, outcome)  # before the lock goes: no "lost"
        self.output.close()
        self.lock.release()
        log.info("schedule %s: run %s %s in %.1f s (exit codes %s)", self.entry.name, self.id,
                 status, time.monotonic() - self.started, self.exit_codes)
        return outcome

    def terminate(self) -> None:
        """Sends SIGTERM to the running command's process group; later commands do not start."""
        self.terminated = True
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)


class Runner:
    """Starts the due runs of a root's entries and follows them to their end.

    A due time is handled once, by whichever process decides first (under `Schedules.guard`):
    on time (at most `grace` seconds late) it starts a run; later than that, `catch-up` starts
    one run for all missed times and `skip` records them as missed. A due time whose entry is
    still running is recorded as an overlap and not run.
    """

    def __init__(self, schedules: Schedules, grace: float = DEFAULT_GRACE):
        if grace < 0:
            raise ScheduleError(f"--grace must be at least 0 seconds; got {grace:g}")
        self.schedules = schedules
        self.grace = grace
        self.runs: list[Run] = []
        self.outcomes: list[Record] = []

    def _start(self, entry: Entry, trigger: str, due: str | None) -> Run | None:
        lock = self.schedules.lock(entry.name)
        if not lock.acquire():
            detail = f"a run is still going on ({lock.holder() or 'holder unknown'})"
            self.schedules.append(entry.name, Record(OVERLAP, trigger, due, _iso(utcnow()),
                                                     detail=detail))
            log.info("schedule %s: %s not run: %s", entry.name, due or "manual run", detail)
            return None
        # Read after taking the lock: a run that ended just before has its outcome written.
        for record in open_runs(self.schedules.history(entry.name)):
            now = _iso(utcnow())
            self.schedules.append(entry.name, dataclasses.replace(
                record, status=LOST, at=now, end=None,
                detail="its runner stopped before the run ended (killed?); the lock was "
                       "released by the OS, exit codes unknown",
            ))
            log.info("schedule %s: run %s was lost (its runner stopped)", entry.name, record.run)
        try:
            run = Run(self.schedules, entry, trigger, due, lock)
        except BaseException:
            lock.release()
            raise
        self.runs.append(run)
        return run

    def start_due(self, now: datetime.datetime | None = None) -> datetime.datetime | None:
        """Handles every entry's due times up to `now`; returns the earliest next due time."""
        now = now or utcnow()
        earliest = None
        with self.schedules.guard():
            for entry in self.schedules.entries():
                try:
                    self._handle(entry, now)
                except ScheduleError as error:  # one damaged history must not stop the rest
                    log.error("schedule %s: %s", entry.name, error)
                upcoming = next_due(entry, now)
                earliest = upcoming if earliest is None else min(earliest, upcoming)
        return earliest

    def _handle(self, entry: Entry, now: datetime.datetime) -> None:
        history = self.schedules.history(entry.name)
        latest = last_due(entry, now)
        if latest <= _cursor(entry, history):
            return
        late = (now - latest).total_seconds()
        due = _iso(latest)
        if late <= self.grace:
            self._start(entry, "scheduled", due)
        elif entry.missed == "catch-up":
            self._start(entry, "catch-up", due)
        else:
            detail = (f"{late:.0f} s late, more than the grace of {self.grace:g} s; "
                      "policy skip (earlier missed times are not listed)")
            self.schedules.append(entry.name, Record(MISSED, "scheduled", due, _iso(now),
                                                     detail=detail))
            log.info("schedule %s: due %s missed: %s", entry.name, due, detail)

    def start_manual(self, name: str) -> Run | None:
        """Starts a run of `name` now (None when one is already going on)."""
        with self.schedules.guard():
            entry = self.schedules.entry(name)
            return self._start(entry, "manual", None)

    def poll(self) -> None:
        """Advances every run; ended ones move to `outcomes`."""
        for run in list(self.runs):
            outcome = run.poll()
            if outcome is not None:
                self.runs.remove(run)
                self.outcomes.append(outcome)

    def wait(self, interval: float = 0.2) -> None:
        """Waits for every run this runner started."""
        self.poll()
        while self.runs:
            time.sleep(interval)
            self.poll()

    def terminate(self) -> None:
        for run in self.runs:
            run.terminate()

    def serve(self, tick: float, stop: threading.Event, kill: threading.Event) -> None:
        """The foreground scheduler: starts due runs until `stop` is set, waking at each due
        time and at least every `tick` seconds. Then it waits for the runs going on, and
        terminates them once `kill` is set too."""
        log.info("scheduler: watching %s (tick %g s, grace %g s)", self.schedules.folder, tick,
                 self.grace)
        while not stop.is_set():
            self.poll()
            now = utcnow()
            try:
                upcoming = self.start_due(now)
            except ScheduleError as error:  # e.g. entries.json edited badly: say so, go on
                log.error("scheduler: %s", error)
                upcoming = None
            pause = tick if upcoming is None else max((upcoming - now).total_seconds(), 0.05)
            stop.wait(min(tick, pause, 0.5) if self.runs else min(tick, pause))  # 0.5: poll runs
        if self.runs:
            log.info("scheduler: stopping after %d run(s) going on end (signal again to "
                     "terminate them)", len(self.runs))
        terminated = False
        while self.runs:
            if kill.is_set() and not terminated:
                log.info("scheduler: terminating %d run(s)", len(self.runs))
                self.terminate()
                terminated = True
            self.poll()
            time.sleep(0.2)
        log.info("scheduler: stopped")


def last_outcome(schedules: Schedules, entry: Entry) -> Record | None:
    """The entry's latest record; a RUNNING one whose lock is free is reported as LOST."""
    history = schedules.history(entry.name)
    if not history or history[-1].status != RUNNING:
        return history[-1] if history else None
    with schedules.guard():
        lock = schedules.lock(entry.name)
        if not lock.acquire():
            return history[-1]
        try:  # read again: a run that ended just before has its outcome written
            last = schedules.history(entry.name)[-1]
        finally:
            lock.release()
    return dataclasses.replace(last, status=LOST) if last.status == RUNNING else last
