"""The ``genpipe`` entry point as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline import cli

GENPIPE = Path(sys.executable).parent / "genpipe"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(GENPIPE), *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_subcommand():
    result = _run("--help")
    assert result.returncode == 0
    for name in ("run", "serve", "generate", "status", "report", "assets"):
        assert f"    {name}" in result.stdout


def test_assets_reports_datasets_weights_and_counts():
    result = _run("assets")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "70,000" in lines["mnist"]
    assert "12,808" in lines["rotten_tomatoes"] and "22,641" in lines["clothing_reviews"]
    assert "vgg19_imagenet" in lines and "inceptionv3_imagenet" in lines
    assert "not IMDB" in lines["rotten_tomatoes"]


def test_unbuilt_subcommands_say_so_and_fail(capsys):
    parser = cli.build_parser()
    unbuilt = [n for n in cli.PLANNED if parser.parse_args([n]).handler.__name__ == "handler"]
    for name in unbuilt:
        assert cli.main([name]) == cli.NOT_BUILT_EXIT
        assert "not built yet" in capsys.readouterr().err


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage: genpipe" in capsys.readouterr().out
