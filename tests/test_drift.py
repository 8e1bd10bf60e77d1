"""Drift: a run whose data moved away from the last run's that passed the gate is stopped there,
with a message naming the feature and by how much, and stays stopped on reruns until
`--accept-drift`; a first run says it had no baseline; `genpipe schema` shows the curated schemas
and merges new statistics into them.

Each later run starts from a copy of an earlier root's ML Metadata store (a session smoke root,
or this module's first run of the data checks), so its previous run is that root's (whose
artifacts it reads, never writes) and the shared root is untouched. The text runs below the
smoke fixtures run the pipeline only up to the gate (ExampleGen and the data checks).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import random
import shutil
from pathlib import Path

import pytest
from idx_files import write_idx

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


def _gate_run(model, profile, layout: RootLayout, source: str, out: io.StringIO,
              check_drift: bool = True):
    """Runs the pipeline's ExampleGen and data checks only (what precedes Transform); progress
    and what the components print go to `out`."""
    from tfx import v1 as tfx

    from components.schemas import schema_file
    from components.text.example_gen import TextExampleGen
    from pipeline import stages
    from pipeline.runner import run_local

    name = model.pipeline_name(profile.name)
    example_gen = TextExampleGen(**model.data_knobs(profile, source))
    checks = stages.data_validation(example_gen.outputs["examples"],
                                    schema_file(model.stages.schema(source)),
                                    dict(model.stages.drift) if check_drift else None, name,
                                    stages.store_address(layout.metadata_config()))
    pipeline = tfx.dsl.Pipeline(
        pipeline_name=name, pipeline_root=layout.pipeline_root(name),
        components=[example_gen, *checks], metadata_connection_config=layout.metadata_config(),
        beam_pipeline_args=list(DEFAULT_BEAM_ARGS), enable_cache=True)
    with contextlib.redirect_stdout(out):
        return run_local(pipeline, out)


def _review_folder(folder: Path, texts) -> str:
    folder.mkdir()
    for index, text in enumerate(texts):
        (folder / f"{index}.txt").write_text(text)
    return str(folder)


def _offline_texts(count: int) -> list[str]:
    from sources.reviews import reviews

    return [review.text for review in itertools.islice(reviews("offline"), count)]



def test_inverted_digits_are_stopped_naming_the_mean_intensity(vae_smoke_run, tmp_path):
    from sources.digits import load_digits

    folder = tmp_path / "inverted"
    folder.mkdir()
    size = vae_smoke_run.profile.ingestion.max_images
    for split, prefix in (("train", "train"), ("test", "t10k")):
        digits = load_digits("mnist", split)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 255 - digits.images[:size])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", digits.labels[:size])
    layout = _copied_store(vae_smoke_run.root, tmp_path)

    message = _drifted_run(vae_smoke_run.model, vae_smoke_run.profile, layout, str(folder))

    assert "DistributionValidator found" in message and "mean_intensity" in message
    assert "Jensen-Shannon divergence" in message and "above the threshold 0.1" in message
    assert "ExampleValidator found" not in message  # the data still fits the digits schema
    assert not Path(layout.serving_dir("vae")).exists()  # nothing pushed


@pytest.fixture(scope="module")
def first_gate_run(tmp_path_factory) -> tuple[RootLayout, str, str]:
    """A first run of the text smoke pipeline's data checks under a new root: (layout, its
    progress output, everything logged at WARNING and above)."""
    from pipeline.profiles import TEXT_PROFILES
    from pipeline.registry import MODELS

    layout = RootLayout(str(tmp_path_factory.mktemp("first_gate_run") / "root"))
    out, logged = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(logged)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        _gate_run(MODELS["text"], TEXT_PROFILES["smoke"], layout, "offline", out)
    finally:
        logging.getLogger().removeHandler(handler)
    return layout, out.getvalue(), logged.getvalue()


def test_first_run_says_it_had_no_drift_baseline(first_gate_run):
    _, out, logged = first_gate_run

    assert "no earlier run of text-lm-smoke passed AnomalyGate" in out
    assert out.count("no baseline (first run): drift not checked") == 1
    assert "no drift" not in out
    assert "DistributionValidator done" in out and "AnomalyGate done" in out
    assert "Traceback" not in logged and "Input resolution error" not in logged


def test_a_rerun_of_the_same_source_passes_the_drift_check(first_gate_run, tmp_path):
    from pipeline.profiles import TEXT_PROFILES
    from pipeline.registry import MODELS

    out = io.StringIO()
    layout = _copied_store(Path(first_gate_run[0].root), tmp_path)
    _gate_run(MODELS["text"], TEXT_PROFILES["smoke"], layout, "offline", out)

    assert "StatisticsGen cached" in out.getvalue()  # the same data: the first run's statistics
    assert "PreviousStatistics done" in out.getvalue()  # looked again, never from the cache
    assert "previous statistics: ExampleStatistics #" in out.getvalue()  # the first run's
    assert "no data anomalies, no drift" in out.getvalue()


def test_a_drifted_source_stays_stopped_until_its_drift_is_accepted(first_gate_run, tmp_path):
    """Reviews cut to three words are stopped on `num_words`, and again when rerun unchanged
    (the stopped run never becomes the baseline); a run with --accept-drift (no comparison)
    passes and becomes the baseline."""
    import ml_metadata as mlmd

    from components.common.previous_statistics import find_previous_statistics
    from components.data_validation import DataAnomaliesError
    from components.schemas import NUM_WORDS
    from pipeline.profiles import TEXT_PROFILES
    from pipeline.registry import MODELS

    model, profile = MODELS["text"], TEXT_PROFILES["smoke"]
    folder = _review_folder(tmp_path / "short_reviews", (
        " ".join(text.split()[:3]) for text in _offline_texts(profile.ingestion.max_documents)))
    layout = _copied_store(Path(first_gate_run[0].root), tmp_path)

    for attempt in ("first", "unchanged rerun"):
        out = io.StringIO()
        with pytest.raises(DataAnomaliesError) as raised:
            _gate_run(model, profile, layout, folder, out)
        message = str(raised.value)
        assert f"train_train: feature {NUM_WORDS!r}" in message, attempt
        assert "Jensen-Shannon divergence" in message and "eval_eval" not in message, attempt
    assert "StatisticsGen cached" in out.getvalue()  # the rerun's data was unchanged

    accepted = _gate_run(model, profile, layout, folder, io.StringIO(), check_drift=False)
    baseline = find_previous_statistics(mlmd.MetadataStore(layout.metadata_config()),
                                        model.pipeline_name(profile.name), "AnomalyGate")
    assert baseline.uri == accepted.output("StatisticsGen", "statistics").uri


def test_reviews_in_other_words_are_stopped_naming_the_vocabulary(first_gate_run, tmp_path):
    from components.data_validation import DataAnomaliesError
    from components.schemas import NUM_WORDS, WORDS
    from pipeline.profiles import TEXT_PROFILES
    from pipeline.registry import MODELS

    profile = TEXT_PROFILES["smoke"]
    shuffle = random.Random(12).sample  # every word's letters shuffled: same lengths
    folder = _review_folder(tmp_path / "scrambled", (
        " ".join("".join(shuffle(word, len(word))) for word in text.split())
        for text in _offline_texts(profile.ingestion.max_documents)))
    layout = _copied_store(Path(first_gate_run[0].root), tmp_path)

    with pytest.raises(DataAnomaliesError) as raised:
        _gate_run(MODELS["text"], profile, layout, folder, io.StringIO())

    message, limit = str(raised.value), dict(MODELS["text"].stages.drift)[WORDS]
    assert f"train_train: feature {WORDS!r}: High Linfty distance" in message
    assert "The Linfty distance between current and previous is" in message
    assert f"above the threshold {limit.threshold}" in message
    assert f"train_train: feature {NUM_WORDS!r}" not in message  # the lengths did not move


def test_drift_limits_name_their_comparator():
    from components.data_validation import drift_config
    from components.schemas import L_INFINITY, DriftLimit

    config = drift_config({"num_words": 0.1, "words": DriftLimit(0.01, L_INFINITY)})

    compared = {feature.path.step[0]: feature.distribution_comparator
                for feature in config.default_slice_config.feature}
    assert compared["num_words"].jensen_shannon_divergence.threshold == pytest.approx(0.1)
    assert compared["words"].infinity_norm.threshold == pytest.approx(0.01)
    assert not compared["words"].HasField("jensen_shannon_divergence")
    with pytest.raises(ValueError, match="drift comparator 'l2' is unknown; allowed: "
                                         "jensen_shannon_divergence, infinity_norm"):
        DriftLimit(0.1, "l2")
    with pytest.raises(ValueError, match=r"drift threshold 0 is out of range; allowed: .*\(0, 1\]"):
        DriftLimit(0)


def test_accept_drift_leaves_the_comparison_out(tmp_path):
    from pipeline.factory import build_pipeline
    from pipeline.registry import MODELS
    from pipeline.runner import RunOptions

    def ids(**options):
        pipeline = build_pipeline(MODELS["vae"], RunOptions(profile="smoke", root=str(tmp_path),
                                                            **options))
        return {component.id for component in pipeline.components}

    assert {"DistributionValidator", "PreviousStatistics"} <= ids()
    assert not {"DistributionValidator", "PreviousStatistics"} & ids(accept_drift=True)
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


def test_schema_update_keeps_the_curation_and_adds_new_features(first_gate_run, tmp_path, capsys):
    from components.schemas import schema_file
    from pipeline.cli import main

    curated = Path(schema_file("text_offline")).read_text()
    words_block = curated[curated.index("# The review's distinct words"):curated.index(
        "string_domain {")]
    edited = tmp_path / "text_offline.pbtxt"
    edited.write_text(curated.replace(words_block, "").replace(
        'feature {\n  name: "num_words"\n',
        '# words per review, for the length drift check\nfeature {\n  name: "num_words"\n'
        '  int_domain { min: 1 max: 5000 }  # tightened by hand\n'
        '  drift_comparator { jensen_shannon_divergence { threshold: 0.2 } }\n'
        '  annotation { comment: "split at white space" }\n'
    ) + 'feature {\n  name: "stars"\n  type: INT\n  presence { min_fraction: 1.0 }\n}\n')
    update = ["schema", "update", "text", "--profile", "smoke", "--root",
              first_gate_run[0].root, "--file", str(edited)]

    assert main(update) == 0  # stdin is no terminal: shows the diff, writes nothing
    out = capsys.readouterr().out
    assert "+ words: new, as inferred" in out and "- stars: not in the statistics" in out
    assert "= num_words: curated constraints kept; the statistics alone would differ in " \
           "annotation, drift_comparator, int_domain" in out
    assert '+  name: "words"' in out and '-  name: "stars"' in out and "not written" in out
    assert "stars" in edited.read_text()

    assert main([*update, "--yes"]) == 0
    written = edited.read_text()
    assert "wrote" in capsys.readouterr().out
    assert 'name: "words"' in written and "stars" not in written
    for kept in ("# words per review, for the length drift check",
                 "int_domain { min: 1 max: 5000 }  # tightened by hand",
                 "jensen_shannon_divergence { threshold: 0.2 }", "split at white space",
                 "# Curated schema `text_offline`"):
        assert kept in written
    assert main([*update, "--dry-run"]) == 0
    assert f"{edited} is up to date" in capsys.readouterr().out
