"""Schedules: entries as data, due-time policies, and the scheduler's lock against overlapping runs.

The timed tests run real `genpipe scheduler` processes on a cron of every 2 seconds; the entries
run a short Python command (the `command` hook) instead of a pipeline, which takes minutes.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import cli, schedule
from pipeline.profiles import PROFILE_NAMES
from pipeline.registry import MODEL_NAMES

GENPIPE = Path(sys.executable).parent / "genpipe"
EVERY_2_S = "*/2 * * * * *"  # 6 fields, seconds first
# Sleeps argv[2] seconds, then appends "start end" (epoch seconds) to argv[1].
SLEEPER = (
    "import sys, time; t = time.time(); time.sleep(float(sys.argv[2])); "
    "open(sys.argv[1], 'a').write(f'{t} {time.time()}\\n')"
)
# Appends its pid to argv[1]; the first one to run hangs for a minute, later ones end at once.
FIRST_HANGS = (
    "import os, sys, time; first = not os.path.exists(sys.argv[1]); "
    "open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(60 if first else 0.2)"
)
HOLDER = re.compile(r"pid (\d+) run (\S+) child (\d+)")


def _until(condition: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def _statuses(schedules: schedule.Schedules, name: str) -> list[str]:
    return [record.status for record in schedules.history(name)]


@pytest.fixture
def start_scheduler(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts `genpipe scheduler` processes; any still running at the end are killed."""
    started: list[subprocess.Popen] = []

    def start(root: Path, tick: float = 0.5) -> subprocess.Popen:
        with open(tmp_path / f"scheduler{len(started)}.out", "w") as output:
            process = subprocess.Popen(
                [str(GENPIPE), "scheduler", "--root", str(root), "--tick", str(tick)],
                stdout=output, stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _add_command(root: Path, name: str, *argv: str, cron: str = EVERY_2_S,
                 missed: str = "skip") -> schedule.Schedules:
    schedules = schedule.Schedules(str(root))
    schedules.add(schedule.Entry(name=name, cron=cron, missed=missed, command=argv))
    return schedules


def _holder(schedules: schedule.Schedules, name: str) -> tuple[int, str, int] | None:
    match = HOLDER.match(schedules.lock(name).holder())
    return (int(match[1]), match[2], int(match[3])) if match else None


def test_two_schedulers_run_an_entry_twice_never_overlapping(tmp_path, start_scheduler):
    intervals = tmp_path / "intervals.txt"
    # Each run takes 3 s, longer than the 2 s between due times: the due time in between
    # finds the run going on, and a second scheduler on the same root races for every start.
    schedules = _add_command(tmp_path, "smoke", sys.executable, "-c", SLEEPER,
                             str(intervals), "3")
    first, second = start_scheduler(tmp_path), start_scheduler(tmp_path)

    def ran_twice() -> bool:
        return intervals.exists() and len(intervals.read_text().splitlines()) >= 2

    assert _until(ran_twice, 25), (tmp_path / "scheduler0.out").read_text()
    for process in (first, second):
        process.send_signal(signal.SIGTERM)  # lets a run going on end, then stops
    assert first.wait(15) == 0 and second.wait(15) == 0

    spans = sorted(tuple(map(float, line.split())) for line in intervals.read_text().splitlines())
    assert len(spans) >= 2
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"runs overlap: {spans}"
    statuses = _statuses(schedules, "smoke")
    assert statuses.count(schedule.SUCCEEDED) == len(spans)
    assert schedule.OVERLAP in statuses  # a due time found the lock held and did not run
    assert not schedule.open_runs(schedules.history("smoke"))  # every run has its outcome


def test_a_killed_run_releases_its_lock_and_the_next_start_runs(tmp_path, start_scheduler):
    pids = tmp_path / "pids.txt"
    schedules = _add_command(tmp_path, "smoke", sys.executable, "-c", FIRST_HANGS, str(pids))
    scheduler = start_scheduler(tmp_path)
    # Started when the command has written its pid: the kill is mid-way through its work.
    assert _until(lambda: _holder(schedules, "smoke") and pids.exists() and pids.read_text(), 15)
    runner_pid, run_id, child_pid = _holder(schedules, "smoke")
    assert (runner_pid, child_pid) == (scheduler.pid, int(pids.read_text()))

    os.kill(scheduler.pid, signal.SIGKILL)  # mid-way through the run
    scheduler.wait(5)
    lock = schedules.lock("smoke")
    assert not lock.acquire(), "the run's command is alive: its inherited lock must hold"
    os.kill(child_pid, signal.SIGKILL)
    assert _until(lock.acquire, 5), "the kernel kept the lock of killed processes"
    lock.release()
    open_runs = schedule.open_runs(schedules.history("smoke"))
    assert [record.run for record in open_runs] == [run_id]  # nobody recorded its end

    start_scheduler(tmp_path)
    assert _until(lambda: schedule.SUCCEEDED in _statuses(schedules, "smoke"), 15)
    history = schedules.history("smoke")
    lost = [record for record in history if record.status == schedule.LOST]
    assert [record.run for record in lost] == [run_id]
    assert history[-1].status == schedule.SUCCEEDED and history[-1].run != run_id
    assert len(pids.read_text().split()) == 2


def test_a_second_signal_terminates_the_run_going_on(tmp_path, start_scheduler):
    schedules = _add_command(tmp_path, "slow", sys.executable, "-c", "import time; "
                             "time.sleep(60)")
    scheduler = start_scheduler(tmp_path)
    assert _until(lambda: _holder(schedules, "slow"), 15)
    scheduler.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        scheduler.wait(1)  # the first signal waits for the run
    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(10) == 0
    last = schedules.history("slow")[-1]
    assert last.status == schedule.INTERRUPTED
    assert last.exit_codes == {"command": -signal.SIGTERM}


def _next_3am(now: datetime.datetime) -> datetime.datetime:
    three = now.replace(hour=3, minute=0, second=0, microsecond=0)
    return three if three > now else three + datetime.timedelta(days=1)


def test_missed_due_times_skip_or_catch_up_once(tmp_path):
    schedules = schedule.Schedules(str(tmp_path))
    for policy in schedule.MISSED_POLICIES:
        schedules.add(schedule.Entry(name=policy, cron="0 3 * * *", missed=policy,
                                     command=(sys.executable, "-c", "pass")))
    runner = schedule.Runner(schedules, grace=60)
    first_due = _next_3am(schedule.utcnow())

    runner.start_due()  # due times before an entry was added never count
    assert not runner.runs and not _statuses(schedules, "skip") + _statuses(schedules, "catch-up")

    late = first_due + datetime.timedelta(days=2, minutes=5)  # three due times missed
    for _ in range(2):  # at most one run per due time, however often it is checked
        runner.start_due(late)
        runner.wait()
    missed_at = (first_due + datetime.timedelta(days=2)).isoformat(timespec="milliseconds")
    [missed] = schedules.history("skip")
    assert (missed.status, missed.due) == (schedule.MISSED, missed_at)
    assert [(r.status, r.trigger, r.due) for r in schedules.history("catch-up")] == [
        (schedule.RUNNING, "catch-up", missed_at),
        (schedule.SUCCEEDED, "catch-up", missed_at),
    ]

    on_time = first_due + datetime.timedelta(days=3, seconds=10)
    runner.start_due(on_time)
    runner.wait()
    for policy in schedule.MISSED_POLICIES:
        last = schedules.history(policy)[-1]
        assert (last.status, last.trigger) == (schedule.SUCCEEDED, "scheduled")


def test_a_model_entry_runs_genpipe_run_with_its_profile_and_root():
    entry = schedule.Entry(name="nightly", cron="0 3 * * *", models=("text", "vae"),
                           profile="smoke", run_args=("--source", "offline"))
    expected = [
        (model, [str(GENPIPE), "run", model, "--profile", "smoke", "--root", "/data/runs",
                 "--source", "offline"])
        for model in ("text", "vae")
    ]
    assert schedule.commands(entry, "/data/runs") == expected
    assert GENPIPE.is_file()
    args = cli.build_parser().parse_args(expected[0][1][1:])
    assert (args.handler.__name__, args.model, args.profile, args.root, args.source) == (
        "run_command", "text", "smoke", "/data/runs", "offline"
    )


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--models", "text", "--cron", "61 * * * *"], ["--cron '61 * * * *'", "'0 3 * * *'"]),
        (["--models", "text", "nope", "--cron", "0 3 * * *"],
         ["--models 'nope': unknown", ", ".join(MODEL_NAMES)]),
        (["--models", "text", "--profile", "huge", "--cron", "0 3 * * *"],
         ["--profile 'huge'", ", ".join(PROFILE_NAMES)]),
        (["--models", "text", "--missed", "never", "--cron", "0 3 * * *"],
         ["--missed 'never'", ", ".join(schedule.MISSED_POLICIES)]),
        (["--models", "text", "--run-args=--root elsewhere", "--cron", "0 3 * * *"],
         ["--run-args may not set --profile, --root"]),
    ],
)
def test_add_refuses_bad_fields_by_name(tmp_path, capsys, options, fragments):
    assert cli.main(["schedule", "add", "nightly", *options, "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in error
    assert schedule.Schedules(str(tmp_path)).entries() == []


def test_names_are_unique_and_safe_file_names(tmp_path, capsys):
    add = ["--models", "text", "--cron", "0 3 * * *", "--root", str(tmp_path)]
    assert cli.main(["schedule", "add", "../escape", *add]) == 2
    assert "NAME '../escape' is not allowed" in capsys.readouterr().err
    assert cli.main(["schedule", "add", "nightly", *add]) == 0
    assert cli.main(["schedule", "add", "nightly", *add]) == 2
    assert "NAME 'nightly' already exists" in capsys.readouterr().err
    assert [e.name for e in schedule.Schedules(str(tmp_path)).entries()] == ["nightly"]


def test_list_shows_next_due_and_last_outcome_and_remove_drops_the_entry(tmp_path, capsys):
    root = ["--root", str(tmp_path)]
    assert cli.main(["schedule", "add", "nightly", "--models", "text", "--profile", "smoke",
                     "--cron", "0 3 * * *", *root]) == 0
    assert cli.main(["schedule", "add", "job", "--command", f"{sys.executable} -c pass",
                     "--cron", "0 3 * * *", *root]) == 0
    next_due = _next_3am(datetime.datetime.now(datetime.timezone.utc))
    assert cli.main(["schedule", "run", "job", *root]) == 0
    capsys.readouterr()

    assert cli.main(["schedule", "list", *root]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert f"{next_due:%Y-%m-%d %H:%M:%S}" in rows["nightly"] and "never ran" in rows["nightly"]
    assert "text (smoke)" in rows["nightly"]
    assert "succeeded" in rows["job"] and "command=0" in rows["job"]

    assert cli.main(["schedule", "remove", "nightly", *root]) == 0
    assert cli.main(["schedule", "remove", "nightly", *root]) == 2
    assert "NAME 'nightly' is not a schedule" in capsys.readouterr().err
    assert [e.name for e in schedule.Schedules(str(tmp_path)).entries()] == ["job"]


def test_a_manual_run_while_one_goes_on_is_recorded_as_overlap(tmp_path, capsys):
    schedules = _add_command(tmp_path, "job", sys.executable, "-c", "pass", cron="0 3 * * *")
    lock = schedules.lock("job")
    assert lock.acquire()
    try:
        assert cli.main(["schedule", "run", "job", "--root", str(tmp_path)]) == 1
    finally:
        lock.release()
    [record] = schedules.history("job")
    assert (record.status, record.trigger) == (schedule.OVERLAP, "manual")
    assert cli.main(["schedule", "run", "job", "--root", str(tmp_path)]) == 0


def test_help_lists_schedule_and_scheduler():
    result = subprocess.run([str(GENPIPE), "--help"], capture_output=True, text=True, timeout=60)
    assert "    schedule " in result.stdout and "    scheduler " in result.stdout
