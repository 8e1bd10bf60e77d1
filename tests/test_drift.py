"""Drift: a run whose data moved away from the previous run's is stopped at the data gate, with a
message naming the feature and by how much; `genpipe schema` shows and refreshes the curated
schemas the pipelines validate against.

Each drifted run starts from a copy of a session smoke root's ML Metadata store, so its previous
run is the session's (whose artifacts it reads, never writes) and the shared root is untouched.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.runner import DEFAULT_BEAM_ARGS, RootLayout

pytestmark = pytest.mark.slow


def _copied_store(source_root: Path, tmp_path: Path) -> RootLayout:
    layout = RootLayout(str(tmp_path / "root"))
    Path(layout.root).mkdir()
    shutil.copy(RootLayout(str(source_root)).metadata_path, layout.metadata_path)
    return layout


def _drifted_run(model, profile, layout: RootLayout, source: str):
    from components.data_validation import DataAnomaliesError
    from pipeline.factory import create_pipeline
    from pipeline.runner import run_local

    name = model.pipeline_name(profile.name)
    pipeline = create_pipeline(
        model=model, profile=profile, pipeline_name=name,
        pipeline_root=layout.pipeline_root(name),
        serving_dir=layout.serving_dir(model.served_name()),
        data=model.data_knobs(profile, source),
        metadata_connection_config=layout.metadata_config(),
        beam_pipeline_args=DEFAULT_BEAM_ARGS,
    )
    with pytest.raises(DataAnomaliesError) as raised:
        run_local(pipeline)
    return str(raised.value)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_inverted_digits_are_stopped_naming_the_mean_intensity(vae_smoke_run, tmp_path):
    from sources.digits import load_digits

    folder = tmp_path / "inverted"
    folder.mkdir()
    size = vae_smoke_run.profile.ingestion.max_images
    for split, prefix in (("train", "train"), ("test", "t10k")):
        digits = load_digits("mnist", split)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 255 - digits.images[:size])
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", digits.labels[:size])
    layout = _copied_store(vae_smoke_run.root, tmp_path)

    message = _drifted_run(vae_smoke_run.model, vae_smoke_run.profile, layout, str(folder))

    assert "DistributionValidator found" in message and "mean_intensity" in message
    assert "Jensen-Shannon divergence" in message and "above the threshold 0.1" in message
    assert "ExampleValidator found" not in message  # the data still fits the digits schema
    assert not Path(layout.serving_dir("vae")).exists()  # nothing pushed


def test_reviews_cut_to_a_few_words_are_stopped_naming_the_word_count(text_smoke_run, tmp_path):
    from pipeline.registry import MODELS
    from sources.reviews import reviews

    folder = tmp_path / "short_reviews"
    folder.mkdir()
    documents = text_smoke_run.profile.ingestion.max_documents
    for index, review in enumerate(reviews("offline")):
        if index == documents:
            break
        (folder / f"{index}.txt").write_text(" ".join(review.text.split()[:3]))
    layout = _copied_store(text_smoke_run.root, tmp_path)

    message = _drifted_run(MODELS["text"], text_smoke_run.profile, layout, str(folder))

    assert "num_words" in message and "Jensen-Shannon divergence" in message


def test_accept_drift_leaves_the_comparison_out(tmp_path):
    from pipeline.factory import build_pipeline
    from pipeline.registry import MODELS
    from pipeline.runner import RunOptions

    def ids(**options):
        pipeline = build_pipeline(MODELS["vae"], RunOptions(profile="smoke", root=str(tmp_path),
                                                            **options))
        return {component.id for component in pipeline.components}

    assert {"DistributionValidator", "previous_statistics_resolver"} <= ids()
    assert not {"DistributionValidator", "previous_statistics_resolver"} & ids(accept_drift=True)
    assert "SchemaGen" in ids(accept_drift=True)  # the curated schema still applies


def test_schema_show_and_update_dry_run(vae_smoke_run, capsys):
    from components.schemas import schema_file
    from pipeline.cli import main

    before = Path(schema_file("digits")).read_text()
    assert main(["schema", "show", "vae"]) == 0
    assert 'name: "mean_intensity"' in capsys.readouterr().out
    assert main(["schema", "update", "vae", "--profile", "smoke", "--root",
                 str(vae_smoke_run.root), "--dry-run"]) == 0
    assert "change(s) from the statistics of vae-smoke" in capsys.readouterr().out
    assert Path(schema_file("digits")).read_text() == before
    assert main(["schema", "show", "dream"]) == 2
    assert "has no training data" in capsys.readouterr().err
