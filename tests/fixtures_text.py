"""Session fixture: the text pipeline's `smoke` profile run once, end to end, with LocalDagRunner.

Import it in tests/conftest.py with `from fixtures_text import text_smoke_run  # noqa: F401`
(pytest puts tests/ on sys.path for conftest; `tests.fixtures_text` does not resolve here because
pytorch-widedeep installs its own top-level `tests` package into site-packages).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pipeline.profiles import TEXT_PROFILES, TextProfile, with_settings
from pipeline.runner import DEFAULT_BEAM_ARGS, RootLayout, RunSummary


@dataclasses.dataclass(frozen=True)
class TextSmokeRun:
    """The first run of the smoke pipeline under a temporary root, and how to run it again."""

    root: Path
    profile: TextProfile
    first: RunSummary

    @property
    def layout(self) -> RootLayout:
        return RootLayout(str(self.root))

    def pipeline(self, part: str | None = None, **changes: Any) -> Any:
        """The same pipeline (same name, root and metadata), with some fields of one part of
        the profile changed (`pipeline("evaluator", perplexity_threshold=1.0)`)."""
        from pipeline.factory import create_pipeline
        from pipeline.registry import MODELS

        model = MODELS["text"]
        profile = with_settings(self.profile, part, **changes) if part else self.profile
        name = model.pipeline_name(profile.name)
        return create_pipeline(
            model=model,
            profile=profile,
            pipeline_name=name,
            pipeline_root=self.layout.pipeline_root(name),
            serving_dir=self.layout.serving_dir(model.served_name()),
            metadata_connection_config=self.layout.metadata_config(),
            beam_pipeline_args=DEFAULT_BEAM_ARGS,
        )

    def run(self, part: str | None = None, **changes: Any) -> RunSummary:
        """Runs the pipeline again (components with unchanged inputs come from the cache)."""
        from pipeline.runner import run_local

        return run_local(self.pipeline(part, **changes))


@pytest.fixture(scope="session")
def text_smoke_run(tmp_path_factory: pytest.TempPathFactory) -> TextSmokeRun:
    """Runs the smoke text pipeline once per test session (about a minute on 2 cores)."""
    from pipeline.runner import run_local

    root = tmp_path_factory.mktemp("text_pipeline")
    partial = TextSmokeRun(root, TEXT_PROFILES["smoke"], first=None)  # type: ignore[arg-type]
    summary = run_local(partial.pipeline())
    return dataclasses.replace(partial, first=summary)
