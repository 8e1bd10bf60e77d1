"""Session fixtures: `genpipe run dream`, `style` and `fast-style` on the smoke profile, each run
once end to end (LocalDagRunner, through the command line) under one temporary root.

Import them in tests/conftest.py by module name, like `fixtures_text`:
`from fixtures_dream_style import dream_style_smoke_root, fast_style_smoke_root  # noqa: E402, F401`
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import pytest

from pipeline.runner import RootLayout, RunSummary


@dataclasses.dataclass(frozen=True)
class SmokeRoot:
    """A root folder after smoke runs: the pipelines' summaries (by pipeline name) and output."""

    root: Path
    summaries: dict[str, RunSummary]
    output: str

    @property
    def layout(self) -> RootLayout:
        return RootLayout(str(self.root))

    def serving_dir(self, model_name: str) -> Path:
        return Path(self.layout.serving_dir(model_name))


def run_cli(*argv: str) -> tuple[int, str]:
    """`genpipe ARGV` in this process; (exit code, stdout + stderr)."""
    from pipeline.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def _run(root: Path, argv: tuple[str, ...], pipeline_names: tuple[str, ...]) -> SmokeRoot:
    """`genpipe run ARGV --profile smoke` once under `root`; the named pipelines' summaries."""
    from pipeline.runner import latest_run

    code, text = run_cli("run", *argv, "--profile", "smoke", "--root", str(root))
    assert code == 0, text
    metadata = RootLayout(str(root)).metadata_config()
    return SmokeRoot(root, {name: latest_run(metadata, name) for name in pipeline_names}, text)


@pytest.fixture(scope="session")
def dream_style_smoke_root(tmp_path_factory: pytest.TempPathFactory) -> SmokeRoot:
    """`genpipe run dream,style` on the smoke profile: both pipelines in one invocation, one ML
    Metadata store (packaged ImageNet weights; about 30 s of work on 2 cores)."""
    root = tmp_path_factory.mktemp("dream_style")
    return _run(root, ("dream,style",), ("deepdream-smoke", "style-transfer-smoke"))


@pytest.fixture(scope="session")
def fast_style_smoke_root(tmp_path_factory: pytest.TempPathFactory) -> SmokeRoot:
    """`genpipe run fast-style --style scream` on the smoke profile (a few training steps)."""
    root = tmp_path_factory.mktemp("fast_style")
    return _run(root, ("fast-style", "--style", "scream"), ("fast-style-scream-smoke",))
