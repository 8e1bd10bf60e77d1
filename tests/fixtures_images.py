"""Session fixtures: the VAE and DCGAN pipelines' `smoke` profiles, each run once end to end with
LocalDagRunner on MNIST, under one root (one ML Metadata store, like `runs/`).

Import them from tests/conftest.py by module name, like `fixtures_text`:
`from fixtures_images import gan_smoke_run, image_pipelines_root, vae_smoke_run  # noqa: E402, F401`
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pipeline.profiles import with_settings
from pipeline.runner import DEFAULT_BEAM_ARGS, RootLayout, RunSummary


@dataclasses.dataclass(frozen=True)
class ImageSmokeRun:
    """The first run of a smoke image pipeline under a temporary root, and how to run it again."""

    root: Path
    model: Any  # pipeline.registry.MODELS["vae"] or ["gan"]
    profile: Any  # its smoke VaeProfile / GanProfile
    first: RunSummary

    @property
    def layout(self) -> RootLayout:
        return RootLayout(str(self.root))

    @property
    def serving_dir(self) -> str:
        return self.layout.serving_dir(self.model.served_name())

    def pipeline(self, part: str | None = None, **changes: Any) -> Any:
        """The same pipeline (same name, root and metadata), with some fields of one part of
        the profile changed (`pipeline("evaluator", max_negative_elbo=1.0)`)."""
        from pipeline.factory import create_pipeline

        profile = with_settings(self.profile, part, **changes) if part else self.profile
        name = self.model.pipeline_name(profile.name)
        return create_pipeline(
            model=self.model,
            profile=profile,
            pipeline_name=name,
            pipeline_root=self.layout.pipeline_root(name),
            serving_dir=self.serving_dir,
            data=self.model.data_knobs(profile, "mnist"),
            metadata_connection_config=self.layout.metadata_config(),
            beam_pipeline_args=DEFAULT_BEAM_ARGS,
        )

    def run(self, part: str | None = None, **changes: Any) -> RunSummary:
        """Runs the pipeline again (components with unchanged inputs come from the cache)."""
        from pipeline.runner import run_local

        return run_local(self.pipeline(part, **changes))


@pytest.fixture(scope="session")
def image_pipelines_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image_pipelines")


def _first_run(root: Path, model: Any, profile: Any) -> ImageSmokeRun:
    partial = ImageSmokeRun(root, model, profile, first=None)  # type: ignore[arg-type]
    return dataclasses.replace(partial, first=partial.run())


@pytest.fixture(scope="session")
def vae_smoke_run(image_pipelines_root: Path) -> ImageSmokeRun:
    """The smoke VAE pipeline, run once per test session (about a minute on 2 cores)."""
    from pipeline.registry import MODELS

    return _first_run(image_pipelines_root, MODELS["vae"], MODELS["vae"].profiles["smoke"])


@pytest.fixture(scope="session")
def gan_smoke_run(image_pipelines_root: Path) -> ImageSmokeRun:
    """The smoke DCGAN pipeline, run once per test session (about a minute on 2 cores)."""
    from pipeline.registry import MODELS

    return _first_run(image_pipelines_root, MODELS["gan"], MODELS["gan"].profiles["smoke"])
