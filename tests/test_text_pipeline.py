"""The text LM pipeline: unit tests of its pieces, then the smoke profile run end to end once
(session fixture `text_smoke_run`), a cached re-run and a run whose model may not be pushed."""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

import contracts
from pipeline import cli
from pipeline.profiles import PROFILE_NAMES, TEXT_PROFILES, get_profile

UPSTREAM = (
    "TextExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
    "Trainer",
)
# May run again on a later identical run: the drift check then has the first run's statistics.
DATA_GATE = ("DistributionValidator", "AnomalyGate")


def versions(serving_dir: str) -> list[str]:
    return sorted(name for name in os.listdir(serving_dir) if name.isdigit())


# --- command line and profiles -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["run", "text", "--profile", "huge"], ["--profile", "'huge'", "smoke, demo, book"]),
        (["run", "text", "--source", "/no/such/folder"], ["--source", "offline", "aclImdb"]),
        (["run", "poem"], ["MODEL", "'poem'", "text"]),
        (["run"], ["MODEL", "text"]),
    ],
)
def test_bad_run_arguments_name_the_field_and_allowed_values(capsys, argv, named):
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    for text in named:
        assert text in error


@pytest.mark.slow
def test_a_failing_component_is_named_and_the_run_exits_non_zero(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(5):
        (docs / f"{i}.txt").write_text(f"only a few documents here, number {i}")
    argv = ["run", "text", "--profile", "smoke", "--source", str(docs), "--root", str(tmp_path)]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "TextExampleGen FAILED" in captured.out
    assert "needs at least 101" in captured.err and "Use a bigger source" in captured.err


def test_profiles_are_data_and_book_matches_the_chapter():
    assert set(TEXT_PROFILES) == set(PROFILE_NAMES)
    book = TEXT_PROFILES["book"]
    assert (book.transform.vocab_size, book.transform.sequence_length) == (15000, 100)
    assert (book.trainer.embed_dim, book.trainer.latent_dim) == (256, 2048)
    assert (book.trainer.num_heads, book.trainer.epochs) == (2, 200)
    for profile in TEXT_PROFILES.values():  # the Trainer's window is the Transform's
        assert profile.trainer.sequence_length == profile.transform.sequence_length
        assert profile.evaluator.batch_size == profile.trainer.batch_size
    with pytest.raises(ValueError, match="allowed: smoke, demo, book"):
        get_profile(TEXT_PROFILES, "tiny")


# --- pieces ---------------------------------------------------------------------------------


def test_preprocessing_fn_builds_vocabulary_ids_and_shifted_targets(tmp_path):
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    from components.text.transform import VOCABULARY_NAME, preprocessing_fn

    texts = ["The movie, the MOVIE!", "the end<br />of the movie", "zebra"]
    spec = {"text": tf.io.FixedLenFeature([1], tf.string)}
    metadata = tft.DatasetMetadata.from_feature_spec(spec)
    fn = functools.partial(preprocessing_fn, custom_config={"vocab_size": 4, "sequence_length": 4})
    with tft_beam.Context(temp_dir=str(tmp_path / "tft")):
        (rows, _), transform_fn = (
            [{"text": [text]} for text in texts], metadata
        ) | tft_beam.AnalyzeAndTransformDataset(fn, output_record_batches=False)
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
    words = tft.TFTransformOutput(str(tmp_path / "out")).vocabulary_by_name(VOCABULARY_NAME)
    assert [w.decode() for w in words] == ["the", "movie"]  # top 4 - 2 specials, by frequency
    the, movie, unknown = 2, 3, 1
    first = [the, movie, the, movie, 0]  # standardized: lowercase, no punctuation, padded
    second = [the, unknown, unknown, the, movie]  # "<br />" splits words; truncated to L + 1
    assert list(rows[0]["inputs"]) == first[:-1] and list(rows[0]["targets"]) == first[1:]
    assert list(rows[1]["inputs"]) == second[:-1] and list(rows[1]["targets"]) == second[1:]
    assert list(rows[2]["inputs"]) == [unknown, 0, 0, 0] and list(rows[2]["targets"]) == [0] * 4


def test_preprocessing_fn_names_a_missing_setting():
    from components.text.transform import preprocessing_fn

    with pytest.raises(ValueError, match="'vocab_size'"):
        preprocessing_fn({}, custom_config={"sequence_length": 8})


def run_example_gen(tmp_path: Path, source: str, max_documents: int = 0):
    """Runs the TextExampleGen executor directly (no pipeline); returns its Examples artifact."""
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.text.example_gen import Executor, TextExampleGen

    component = TextExampleGen(source=source, max_documents=max_documents)
    properties = {
        key: proto_utils.proto_to_json(value) if hasattr(value, "DESCRIPTOR") else value
        for key, value in component.exec_properties.items()
    }
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    executor = Executor(BaseBeamExecutor.Context(beam_pipeline_args=[], tmp_dir=str(tmp_path)))
    executor.Do({}, {"examples": [examples]}, properties)
    return examples


def test_example_gen_counts_and_drops_undecodable_empty_and_duplicate_documents(tmp_path):
    import tensorflow as tf

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("A fine film.")
    (docs / "b.txt").write_text("A fine film.")
    (docs / "c.txt").write_text("A fine film.")
    (docs / "blank.txt").write_text("  \n ")
    (docs / "latin1.txt").write_bytes(b"caf\xe9 au lait")
    for i in range(150):
        (docs / f"n{i}.txt").write_text(f"review number {i} of a film")
    examples = run_example_gen(tmp_path, str(docs))

    counts = {name: examples.get_int_custom_property(name) for name in (
        "documents_read", "undecodable_documents", "empty_documents", "duplicate_documents",
        "examples_written", "train_examples", "eval_examples",
    )}
    assert counts["documents_read"] == 155
    assert (counts["undecodable_documents"], counts["empty_documents"]) == (1, 1)
    assert counts["duplicate_documents"] == 2
    assert counts["examples_written"] == 151 == counts["train_examples"] + counts["eval_examples"]
    texts = []
    for split in ("train", "eval"):
        files = tf.io.gfile.glob(str(tmp_path / "examples" / f"Split-{split}" / "*"))
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            texts.append(example.features.feature["text"].bytes_list.value[0].decode())
            assert example.features.feature["origin"].bytes_list.value[0].endswith(b".txt")
    assert len(texts) == 151 and texts.count("A fine film.") == 1


def test_example_gen_refuses_too_few_documents_for_schema_inference(tmp_path):
    with pytest.raises(ValueError, match="needs at least 101"):
        run_example_gen(tmp_path, "offline", max_documents=60)


def test_blessing_needs_every_criterion():
    from components.text.evaluate import Criteria, blessing_decision

    criteria = Criteria(perplexity_threshold=100.0, baseline_tolerance=0.1, max_unigram_ratio=0.5)
    assert blessing_decision(40.0, 100.0, None, criteria)[0]
    assert blessing_decision(40.0, 100.0, 37.0, criteria)[0]  # within 10% of the baseline
    blessed, message = blessing_decision(40.0, 100.0, 30.0, criteria)
    assert not blessed and "last blessed 30.00" in message
    blessed, message = blessing_decision(60.0, 100.0, None, criteria)
    assert not blessed and "unigram" in message
    blessed, message = blessing_decision(120.0, 1000.0, None, criteria)
    assert not blessed and "threshold 100" in message


def test_anomaly_gate_stops_the_run_naming_each_anomaly(tmp_path):
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    from tfx.types import artifact_utils, standard_artifacts

    from components.data_validation import AnomalyGate, DataAnomaliesError

    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(tmp_path)
    anomalies.split_names = artifact_utils.encode_split_names(["train", "eval"])
    clean = anomalies_pb2.Anomalies()
    found = anomalies_pb2.Anomalies()
    reason = found.anomaly_info["label"].reason.add()
    reason.short_description = "Unexpected string values"
    reason.description = "Examples contain values missing from the schema: meh (~3%)."
    for split, proto in (("train", clean), ("eval", found)):
        (tmp_path / f"Split-{split}").mkdir()
        (tmp_path / f"Split-{split}" / "SchemaDiff.pb").write_bytes(proto.SerializeToString())
    executor = AnomalyGate.EXECUTOR_SPEC.executor_class()
    with pytest.raises(DataAnomaliesError, match="eval: feature 'label': Unexpected string"):
        executor.Do({"anomalies": [anomalies]}, {}, {})
    (tmp_path / "Split-eval" / "SchemaDiff.pb").write_bytes(clean.SerializeToString())
    executor.Do({"anomalies": [anomalies]}, {}, {})


def test_kubeflow_v2_spec_compiles_offline(tmp_path):
    from pipeline.factory import build_pipeline
    from pipeline.kubeflow import compile_pipeline
    from pipeline.registry import MODELS
    from pipeline.runner import RunOptions

    options = RunOptions(profile="smoke", root="gs://bucket/genpipe")
    spec = compile_pipeline(build_pipeline(MODELS["text"], options, for_local_run=False),
                            str(tmp_path / "t.yaml"), image="genpipe:test")
    tasks = spec["root"]["dag"]["tasks"]
    assert {"TextExampleGen", "Transform", "Trainer", "TextLmEvaluator", "ServingValidator",
            "Pusher"} <= set(tasks)
    assert "AnomalyGate" in tasks["Transform"]["dependentTasks"]
    assert {"TextLmEvaluator", "ServingValidator"} <= set(tasks["Pusher"]["dependentTasks"])
    executor = spec["deploymentSpec"]["executors"]["Trainer_executor"]["container"]
    assert executor["image"] == "genpipe:test"


def test_publish_version_is_a_rename_of_a_complete_folder(tmp_path):
    from components.push import latest_version, publish_version, same_files, version_files

    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "variables.index").write_bytes(b"index")
    base = tmp_path / "serving"
    base.mkdir()
    publish_version(version_files(str(model)), str(base / "17"))
    assert os.listdir(base) == ["17"]  # no staging folder left behind
    assert latest_version(str(base)) == "17"
    assert same_files(version_files(str(model)), str(base / "17"))
    (model / "saved_model.pb").write_bytes(b"other graph")
    assert not same_files(version_files(str(model)), str(base / "17"))


# --- the smoke pipeline, end to end ----------------------------------------------------------


@pytest.mark.slow
def test_examples_artifact_records_split_and_cleaning_counts(text_smoke_run):
    counts = text_smoke_run.first.output("TextExampleGen", "examples").properties
    assert counts["documents_read"] == text_smoke_run.profile.ingestion.max_documents
    dropped = sum(counts[k] for k in (
        "undecodable_documents", "empty_documents", "duplicate_documents",
    ))
    assert counts["examples_written"] == counts["documents_read"] - dropped
    assert counts["train_examples"] + counts["eval_examples"] == counts["examples_written"]
    assert 0.03 < counts["eval_examples"] / counts["examples_written"] < 0.2  # ~10% by text hash
    assert counts["source"] == "offline"


@pytest.mark.slow
def test_vocabulary_travels_with_the_model(text_smoke_run):
    from components.text.transform import VOCABULARY_NAME

    graph = text_smoke_run.first.output("Transform", "transform_graph").uri
    words = Path(graph, "transform_fn", "assets", VOCABULARY_NAME).read_text().splitlines()
    assert 100 < len(words) <= text_smoke_run.profile.transform.vocab_size - 2
    assert "" not in words and "[UNK]" not in words
    pushed = text_smoke_run.first.output("Pusher", "pushed_model").properties
    exported = Path(pushed["pushed_destination"], "assets", "vocabulary.txt").read_text()
    assert exported.splitlines() == ["[UNK]", *words]  # ids 1, 2, ...; padding id 0 has no line


@pytest.mark.slow
def test_transformed_examples_are_shifted_id_sequences(text_smoke_run):
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.text.data import lm_dataset

    first = text_smoke_run.first
    transform = tft.TFTransformOutput(first.output("Transform", "transform_graph").uri)
    examples = first.output("Transform", "transformed_examples").uri
    length = text_smoke_run.profile.transform.sequence_length
    batches = list(lm_dataset([os.path.join(examples, "Split-eval", "*")], transform, 1000))
    inputs, targets = (np.concatenate([b[i].numpy() for b in batches]) for i in (0, 1))
    assert inputs.shape == targets.shape and inputs.shape[1] == length
    assert inputs.dtype == np.int64
    assert tf.reduce_max(inputs) < text_smoke_run.profile.transform.vocab_size
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    assert (inputs[:, 0] > 0).all() and (targets == 0).any()  # documents start; short ones pad


@pytest.mark.slow
def test_model_beats_the_unigram_baseline_and_is_blessed(text_smoke_run):
    evaluation = text_smoke_run.first.output("TextLmEvaluator", "evaluation")
    metrics = json.loads(Path(evaluation.uri, "metrics.json").read_text())
    assert metrics["eval_tokens"] > 0
    assert 1 < metrics["perplexity"] < metrics["unigram_perplexity"]
    assert evaluation.properties["perplexity"] == pytest.approx(metrics["perplexity"])
    blessing = text_smoke_run.first.output("TextLmEvaluator", "blessing")
    assert blessing.properties["blessed"] == 1
    assert blessing.properties["current_model_id"] == text_smoke_run.first.output(
        "Trainer", "model").id


@pytest.mark.slow
def test_pushed_version_is_a_servable_savedmodel_with_the_contracts_signatures(text_smoke_run):
    from session_path import load

    pushed = text_smoke_run.first.output("Pusher", "pushed_model").properties
    assert pushed["pushed"] == 1
    version_dir = Path(pushed["pushed_destination"])
    assert version_dir.parent == Path(text_smoke_run.layout.serving_dir("text_lm"))
    assert version_dir.name == pushed["pushed_version"] and version_dir.name.isdigit()
    assert {"saved_model.pb", "variables", "assets"} <= set(os.listdir(version_dir))
    from components.push import LOCK_FILE

    # no staging folder left; the pushers' lock file stays (servers skip dot names)
    assert [name for name in os.listdir(version_dir.parent) if name.startswith(".")] in (
        [], [LOCK_FILE])

    loaded = load(version_dir)  # TF Serving's loading path
    assert set(loaded.signatures) == set(contracts.contract_for("text_lm").signature_keys())
    scored = loaded.signatures["score"](text=["this movie is a good film"])
    assert math.isfinite(float(scored["perplexity"][0])) and float(scored["perplexity"][0]) > 1
    generated = loaded.signatures["generate"](
        prompt=["this movie"], max_tokens=[3], temperature=[0.0], top_k=[0], top_p=[1.0],
        seed=[7],
    )
    assert int(generated["num_tokens"][0]) == 3


@pytest.mark.slow
def test_training_logs_scalars_and_text_samples_for_tensorboard(text_smoke_run):
    run_dir = Path(text_smoke_run.first.output("Trainer", "model_run").uri)
    events = [p.relative_to(run_dir) for p in run_dir.rglob("events.out.tfevents.*")]
    assert any(p.parts[0] == "train" for p in events)
    assert any(p.parts[0] == "samples" for p in events)


@pytest.mark.slow
def test_second_identical_run_from_the_command_line_is_served_from_cache(text_smoke_run, capsys):
    from pipeline.runner import latest_run

    serving = text_smoke_run.layout.serving_dir("text_lm")
    before = versions(serving)
    root = str(text_smoke_run.root)
    assert cli.main(["run", "text", "--profile", "smoke", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "Transform cached in" in out and "Trainer cached in" in out
    assert "held-out perplexity" in out and "served from" in out and "not IMDB" in out
    assert "serving validation: blessed: generate" in out

    second = latest_run(text_smoke_run.layout.metadata_config(), "text-lm-smoke")
    assert second.run_id != text_smoke_run.first.run_id
    for node_id in UPSTREAM:
        assert second.components[node_id].state == "CACHED", node_id
    for node_id in DATA_GATE:  # same data as before: no drift, the run goes on
        assert second.components[node_id].state in ("COMPLETE", "CACHED"), node_id
    first_model = text_smoke_run.first.output("Trainer", "model")
    assert second.output("Trainer", "model").id == first_model.id
    blessing = second.output("TextLmEvaluator", "blessing").properties  # re-scored: new baseline
    assert blessing["blessed"] == 1 and blessing["baseline_model_id"] == first_model.id
    pushed = second.output("Pusher", "pushed_model").properties
    assert pushed["pushed"] == 1 and pushed["reused_version"] == 1  # same model: no new version
    assert versions(serving) == before


@pytest.mark.slow
def test_model_over_an_impossible_threshold_is_not_pushed(text_smoke_run):
    serving = text_smoke_run.layout.serving_dir("text_lm")
    before = versions(serving)
    run = text_smoke_run.run("evaluator", perplexity_threshold=1.0)
    assert run.components["Trainer"].state == "CACHED"
    blessing = run.output("TextLmEvaluator", "blessing").properties
    assert blessing["blessed"] == 0 and "threshold 1" in blessing["blessing_message"]
    assert run.output("Pusher", "pushed_model").properties["pushed"] == 0
    assert versions(serving) == before
