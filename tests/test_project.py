"""Project plumbing that cannot run here (no Docker engine) checked for what can be checked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dockerfile_copies() -> list[list[str]]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return [line.split()[1:-1] for line in lines if line.startswith("COPY ")]


def test_dockerfile_copy_sources_exist():
    copies = _dockerfile_copies()
    assert copies, "Dockerfile copies nothing"
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile COPY source {source} missing"


def test_dockerfile_installs_the_same_lock_files_as_setup():
    dockerfile = (ROOT / "Dockerfile").read_text()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for lock in ("requirements/lock.txt", "requirements/carriers.txt"):
        assert lock in dockerfile and lock in setup
    assert dockerfile.splitlines()[3].startswith("FROM python:3.10-slim") or (
        "FROM python:3.10-slim" in dockerfile
    )
    assert re.search(r'ENTRYPOINT \["genpipe"\]', dockerfile)
    uv_pin = re.search(r"uv==([\d.]+)", dockerfile).group(1)
    assert f"UV_VERSION := {uv_pin}" in (ROOT / "Makefile").read_text()


def test_carriers_are_pinned_and_kept_apart_from_the_lock():
    carriers = [
        line
        for line in (ROOT / "requirements/carriers.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert all("==" in line for line in carriers)
    lock = (ROOT / "requirements/lock.txt").read_text()
    for line in carriers:
        assert line.split("==")[0] not in lock


def test_lock_pins_the_stack_named_by_the_design():
    lock = (ROOT / "requirements/lock.txt").read_text()
    for pin in (
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "apache-beam==2.59.",
        "tensorflow-serving-api==2.16.1",
    ):
        assert pin in lock


def test_generated_folders_are_ignored():
    for path in (
        "out/x.png",
        "runs/a",
        ".assets/paintings/s.jpg",
        ".venv/bin/python",
        "w.weights.h5",
    ):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert result.returncode == 0, f"{path} is not ignored"
