"""The ``genpipe`` entry point as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from contracts import text_lm
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


def test_generate_is_the_clients_command_with_the_contracts_defaults():
    args = cli.build_parser().parse_args(["generate", "text", "this movie"])
    assert args.handler.__module__ == "client.cli"
    assert (args.temperature, args.max_tokens) == (
        text_lm.GENERATE.input("temperature").default,
        text_lm.GENERATE.input("max_tokens").default,
    )


def test_generate_help_shows_defaults_and_bad_values_name_the_flag():
    result = _run("generate", "text", "--help")
    assert result.returncode == 0, result.stderr
    temperature = text_lm.GENERATE.input("temperature")
    help_text = " ".join(result.stdout.split())
    assert f"default {temperature.default}; allowed {temperature.range_text()}" in help_text
    result = _run("generate", "text", "x", "--top-p", "1.5")
    assert result.returncode == 2
    assert "argument --top-p: must be in (0, 1]; got 1.5" in result.stderr
