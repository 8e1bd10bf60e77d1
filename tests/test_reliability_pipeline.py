"""Pipeline faults (issue 13): `kill -9` of a run during Transform, the Trainer and the push,
then the same command again; and degraded models (zero steps, shuffled or pure-noise data)
put before the evaluators and their gate.

A kill must leave nothing a model server could load half written: versions appear by an
atomic rename, a watcher polls the serving folder the whole time, and the next push removes
the staging folder the killed one left. The next run reuses what finished from the cache.

The kills run with `GENPIPE_SOAK=1` (`make soak`): the whole-pipeline ones run `genpipe run
vae --profile smoke` twice each (minutes), and even the pusher alone, on the session smoke
VAE's model, spends most of a minute importing TFX in its new process. So do the degraded GANs
(InceptionV3 features of three image sets) and the LM trained on shuffled targets. The suite
scores the zero-step and noise-trained VAE and the zero-step LM with the evaluators' own
functions on the session smoke runs' data.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.push import STAGING, same_files, version_files
from pipeline.stages import UNCACHED
from serving.status import versions_on_disk

REPO = Path(__file__).resolve().parents[1]
SOAK = os.environ.get("GENPIPE_SOAK") == "1"
soak = pytest.mark.skipif(not SOAK, reason="minutes of work: GENPIPE_SOAK=1 (make soak)")
COPY_DELAY = 0.4  # seconds the killed pusher waits after each staged file: time to kill it

# Runs `pipeline.cli.main(argv)` (what `genpipe` runs) with every file copied into a staging
# folder followed by a pause, so that the test can kill the push half way through staging.
SLOW_PUSH = """
import re, sys, time
from components import push
copy = push.io_utils.copy_file
def slow_copy(source, destination, **options):
    copy(source, destination, **options)
    if re.search(r"/[.][0-9]+[.]partial/", destination):
        time.sleep(float(sys.argv[1]))
push.io_utils.copy_file = slow_copy
"""
RUN_CLI = SLOW_PUSH + """
from pipeline.cli import main
sys.exit(main(sys.argv[2:]))
"""
# Runs AtomicPushExecutor alone on the artifacts named in a JSON file (argv[2]).
RUN_PUSHER = SLOW_PUSH + """
import json
from test_reliability_pipeline import run_pusher
run_pusher(**json.loads(open(sys.argv[2]).read()))
"""


class ServingWatcher(threading.Thread):
    """Polls a model's serving folder as a model server would, every few milliseconds, and
    records every version folder it ever saw without its saved_model.pb."""

    def __init__(self, model_dir: Path):
        super().__init__(daemon=True)
        self.model_dir = model_dir
        self.partial_seen: set[int] = set()
        self.polls = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.model_dir.is_dir():
                try:
                    _, partial = versions_on_disk(self.model_dir)
                except FileNotFoundError:  # a folder renamed away while listed
                    continue
                self.partial_seen.update(partial)
                self.polls += 1
            time.sleep(0.005)

    def stop(self) -> ServingWatcher:
        self.done.set()
        self.join()
        return self


def staged_files(model_dir: Path) -> list[Path]:
    """The files inside `.<version>.partial` staging folders of a model's serving folder."""
    if not model_dir.is_dir():
        return []
    return [path for child in model_dir.iterdir() if STAGING.fullmatch(child.name)
            for path in child.rglob("*") if path.is_file()]


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str,
             timeout: float = 600.0) -> None:
    """Waits until `condition()` holds; fails if `process` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the process ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to the process group (`start_new_session=True`) and reap the leader."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def run_pusher(model: str, model_blessing: str, infra_blessing: str, base_dir: str,
               pushed: str) -> Any:
    """AtomicPushExecutor pushing the Model at `model` (blessed by the two blessing folders,
    as the pipeline's evaluator and ServingValidator left them) into `base_dir`."""
    from tfx import v1 as tfx
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.push import AtomicPushExecutor

    def artifact(kind: type, uri: str, blessed: int | None = None) -> Any:
        made = kind()
        made.uri = uri
        if blessed is not None:
            made.set_int_custom_property("blessed", blessed)
        return made

    output = artifact(standard_artifacts.PushedModel, pushed)
    os.makedirs(pushed, exist_ok=True)
    destination = tfx.proto.PushDestination(
        filesystem=tfx.proto.PushDestination.Filesystem(base_directory=base_dir))
    AtomicPushExecutor().Do(
        {"model": [artifact(standard_artifacts.Model, model)],
         "model_blessing": [artifact(standard_artifacts.ModelBlessing, model_blessing, 1)],
         "infra_blessing": [artifact(standard_artifacts.InfraBlessing, infra_blessing, 1)]},
        {"pushed_model": [output]},
        {"push_destination": proto_utils.proto_to_json(destination)},
    )
    return output


def _python(script: str, *argv: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-c", script, *argv], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


# --- the push killed half way ---------------------------------------------------------------


@soak  # 55 s at load 6: importing the pusher (all of tfx.components) in a new process is 46 s
@pytest.mark.slow
def test_a_pusher_killed_while_staging_leaves_no_version_and_the_next_push_cleans_up(
        vae_smoke_run, tmp_path):
    first = vae_smoke_run.first
    inputs = {
        "model": first.output("Trainer", "model").uri,
        "model_blessing": first.output("VaeEvaluator", "blessing").uri,
        "infra_blessing": first.output("ServingValidator", "blessing").uri,
        "base_dir": str(tmp_path / "serving" / "vae"),
    }
    model_dir = Path(inputs["base_dir"])
    (tmp_path / "push.json").write_text(json.dumps({**inputs, "pushed": str(tmp_path / "p1")}))
    watcher = ServingWatcher(model_dir)
    watcher.start()
    pusher = _python(RUN_PUSHER, str(COPY_DELAY), str(tmp_path / "push.json"),
                     log=tmp_path / "pusher.log")
    wait_for(lambda: len(staged_files(model_dir)) >= 2, pusher, "the pusher staged 2 files")
    kill_group(pusher)

    left = sorted(child.name for child in model_dir.iterdir())
    assert [name for name in left if STAGING.fullmatch(name)] and versions_on_disk(model_dir) == (
        [], []), left  # a staging folder, no version
    pushed = run_pusher(**inputs, pushed=str(tmp_path / "p2"))
    watcher.stop()

    assert pushed.get_int_custom_property("removed_partials") == 1
    version = pushed.get_string_custom_property("pushed_version")
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == [version]
    assert not [p for p in model_dir.iterdir() if STAGING.fullmatch(p.name)]
    from tfx.types import standard_artifacts

    from components.push import warmup_file

    infra = standard_artifacts.InfraBlessing()
    infra.uri = inputs["infra_blessing"]
    files = version_files(os.path.join(inputs["model"], "Format-Serving"),
                          warmup_file({"infra_blessing": [infra]}))
    assert same_files(files, str(model_dir / version))  # complete, byte for byte
    assert watcher.polls > 50 and not watcher.partial_seen


# --- whole pipeline runs killed (make soak) --------------------------------------------------

PIPELINE = "vae-smoke"
# Components whose inputs the killed run changed: the drift check now has the killed run's
# statistics as its baseline, and the evaluator (after a kill during the push) its blessing.
NEW_INPUTS = ("DistributionValidator", "AnomalyGate", "VaeEvaluator")


def _execution_states(metadata: Path, node_id: str) -> list[str]:
    """The states of every execution of one component, oldest first (read-only sqlite)."""
    from ml_metadata.proto import metadata_store_pb2

    if not metadata.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{metadata}?mode=ro", uri=True, timeout=1) as db:
            rows = db.execute(
                "SELECT e.last_known_state FROM Execution e JOIN Association a "
                "ON a.execution_id = e.id JOIN Context c ON c.id = a.context_id "
                "WHERE c.name = ? ORDER BY e.id", (f"{PIPELINE}.{node_id}",)).fetchall()
    except sqlite3.OperationalError:  # locked by the writer, or the schema is not there yet
        return []
    return [metadata_store_pb2.Execution.State.Name(state) for state, in rows]


@soak
@pytest.mark.slow
@pytest.mark.parametrize("node_id", ["Transform", "Trainer", "Pusher"])
def test_kill_9_of_a_pipeline_run_then_the_same_command_finishes_from_cache(node_id, tmp_path):
    from pipeline.runner import RootLayout, latest_run

    root = tmp_path / "root"
    metadata = root / "metadata.sqlite"
    model_dir = root / "serving" / "vae"
    argv = ["run", "vae", "--profile", "smoke", "--root", str(root)]
    watcher = ServingWatcher(model_dir)
    watcher.start()

    killed = _python(RUN_CLI, str(COPY_DELAY), *argv, log=tmp_path / "killed.log")
    wait_for(lambda: _execution_states(metadata, node_id)[-1:] == ["RUNNING"], killed,
             f"{node_id} was running")
    if node_id == "Pusher":
        wait_for(lambda: len(staged_files(model_dir)) >= 2, killed, "2 files were staged")
    else:
        time.sleep(1.0)  # well inside the component's work
    kill_group(killed)
    assert _execution_states(metadata, node_id) == ["RUNNING"]  # killed during it
    layout = RootLayout(str(root))
    before = latest_run(layout.metadata_config(), PIPELINE)
    finished = {node for node, run in before.components.items() if run.state == "COMPLETE"}
    assert versions_on_disk(model_dir) == ([], []) if model_dir.is_dir() else True
    assert bool(staged_files(model_dir)) == (node_id == "Pusher")

    started = time.monotonic()
    again = subprocess.run([str(REPO / ".venv/bin/genpipe"), *argv], cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    watcher.stop()
    assert again.returncode == 0, again.stdout + again.stderr

    after = latest_run(layout.metadata_config(), PIPELINE)
    states = {node: run.state for node, run in after.components.items()}
    reused = {node for node in finished  # resolvers and lookups are queries: they run every time
              if node not in NEW_INPUTS and node not in UNCACHED and not node.endswith("_resolver")}
    assert all(states[node] == "CACHED" for node in reused), (finished, states)
    assert states[node_id] == "COMPLETE"
    pushed = after.output("Pusher", "pushed_model").properties
    assert pushed["pushed"] == 1 and pushed["reused_version"] == 0
    assert pushed["removed_partials"] == (1 if node_id == "Pusher" else 0)
    assert versions_on_disk(model_dir) == ([int(pushed["pushed_version"])], [])
    assert not staged_files(model_dir) and not watcher.partial_seen and watcher.polls > 100
    print(f"\n{node_id}: killed; finished components reused {sorted(reused)}; second run "
          f"{seconds:.0f} s; serving polled {watcher.polls} times, no partial version")


# --- degraded models before the gate (in the suite) ------------------------------------------


def _refused_and_not_pushed(tmp_path: Path, blessed: bool, message: str, what: str) -> str:
    """Asserts the gate refused (`blessed` False, a message naming `what`), then hands a
    ModelBlessing carrying that decision to the pusher: nothing is pushed, and the pusher's
    reason repeats the gate's message. Returns the message."""
    from components.push import NOT_PUSHED_REASON

    assert not blessed and message.startswith("not blessed: failed ") and what in message, message
    blessing = tmp_path / "blessing"
    blessing.mkdir()
    infra = tmp_path / "infra"
    infra.mkdir()
    base = tmp_path / "serving"
    output = _push_with(tmp_path, blessing, infra, base, message)
    assert output.get_int_custom_property("pushed") == 0
    reason = output.get_string_custom_property(NOT_PUSHED_REASON)
    assert reason == f"model_blessing not blessed ({message})", reason
    assert not base.exists() or not any(base.iterdir())
    return message


def _push_with(tmp_path: Path, blessing: Path, infra: Path, base: Path, message: str) -> Any:
    """AtomicPushExecutor with a not-blessed ModelBlessing carrying `message`."""
    from tfx import v1 as tfx
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.push import AtomicPushExecutor

    def artifact(kind: type, uri: Path) -> Any:
        made = kind()
        made.uri = str(uri)
        return made

    model_blessing = artifact(standard_artifacts.ModelBlessing, blessing)
    model_blessing.set_int_custom_property("blessed", 0)
    model_blessing.set_string_custom_property("blessing_message", message)
    infra_blessing = artifact(standard_artifacts.InfraBlessing, infra)
    infra_blessing.set_int_custom_property("blessed", 1)
    output = artifact(standard_artifacts.PushedModel, tmp_path / "pushed")
    destination = tfx.proto.PushDestination(
        filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(base)))
    AtomicPushExecutor().Do(
        {"model": [artifact(standard_artifacts.Model, tmp_path / "model")],
         "model_blessing": [model_blessing], "infra_blessing": [infra_blessing]},
        {"pushed_model": [output]},
        {"push_destination": proto_utils.proto_to_json(destination)},
    )
    return output


def _noise_like(dataset: Any, seed: int) -> Any:
    """The same batches with every image replaced by uniform noise in [0, 1]."""
    import tensorflow as tf

    return dataset.map(lambda images: tf.random.stateless_uniform(
        tf.shape(images), seed=[seed, 0]))


@pytest.mark.slow
@pytest.mark.parametrize("degraded", ["zero steps", "pure noise"])
def test_a_degraded_vae_is_never_blessed_and_the_gate_says_why(vae_smoke_run, tmp_path, degraded):
    import keras
    import tensorflow_transform as tft

    from components.common.evaluation import decide
    from components.images.data import image_dataset, keras_model_path, split_files
    from components.images.evaluate import NEGATIVE_ELBO, vae_checks, vae_metrics
    from components.images.vae_trainer import KERAS_FILE
    from models.vae import build_vae

    first, profile = vae_smoke_run.first, vae_smoke_run.profile
    transform = first.output("Transform", "transform_graph").uri
    examples = first.output("Transform", "transformed_examples").uri
    output = tft.TFTransformOutput(transform)
    trainer = profile.trainer
    keras.utils.set_random_seed(trainer.seed)
    vae = build_vae(trainer.latent_dim, (28, 28, 1), learning_rate=trainer.learning_rate,
                    seed=trainer.seed)
    if degraded == "pure noise":  # the smoke schedule, on noise of the same shape and count
        train = image_dataset(split_files(examples, "train"), output, trainer.batch_size)
        vae.fit(_noise_like(train, trainer.seed), epochs=trainer.epochs, verbose=0)
    model_uri = tmp_path / "model"
    keras_path = Path(keras_model_path(str(model_uri), KERAS_FILE))
    keras_path.parent.mkdir(parents=True)
    vae.save(keras_path)

    metrics = vae_metrics(split_files(examples, "eval"), transform, str(model_uri),
                          batch_size=256, seed=profile.evaluator.seed)
    blessed_value = first.output("VaeEvaluator", "blessing").properties[NEGATIVE_ELBO]
    blessed, message = decide(vae_checks(
        metrics[NEGATIVE_ELBO], max_negative_elbo=profile.evaluator.max_negative_elbo,
        baseline=blessed_value, baseline_tolerance=profile.evaluator.baseline_tolerance))
    _refused_and_not_pushed(tmp_path, blessed, message,
                            f"negative ELBO (nats) {metrics[NEGATIVE_ELBO]:.4g} <= threshold "
                            f"{profile.evaluator.max_negative_elbo:.4g}")
    assert "last blessed" in message and "missed by" in message
    print(f"\nVAE {degraded}: {message}")


@pytest.mark.slow
@pytest.mark.parametrize("degraded", ["zero steps", pytest.param("shuffled targets", marks=soak)])
def test_a_degraded_text_lm_is_never_blessed_and_the_gate_says_why(text_smoke_run, tmp_path,
                                                                   degraded):
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.text.data import keras_model_path, lm_dataset, vocabulary
    from components.text.evaluate import (
        PERPLEXITY,
        UNIGRAM_PERPLEXITY,
        Criteria,
        blessing_decision,
        score_model,
    )
    from models.text.lm import build_lm, compile_lm
    from pipeline.profiles import TEXT_PROFILES

    first, profile = text_smoke_run.first, text_smoke_run.profile
    transform = first.output("Transform", "transform_graph").uri
    examples = first.output("Transform", "transformed_examples").uri
    output = tft.TFTransformOutput(transform)
    settings = profile.trainer
    keras.utils.set_random_seed(settings.seed)
    model = build_lm(len(vocabulary(output)), settings.sequence_length, settings.embed_dim,
                     settings.latent_dim, settings.num_heads, settings.num_layers)
    compile_lm(model, settings.learning_rate)
    if degraded == "shuffled targets":  # each row's target words in a random order
        train = lm_dataset([os.path.join(examples, "Split-train", "*")], output,
                           settings.batch_size, shuffle_seed=settings.seed)
        shuffled = train.map(lambda inputs, targets: (inputs, tf.map_fn(
            lambda row: tf.random.shuffle(row, seed=settings.seed), targets)))
        model.fit(shuffled, epochs=settings.epochs, verbose=0)
    model_uri = tmp_path / "model"
    Path(keras_model_path(str(model_uri))).parent.mkdir(parents=True)
    model.save(keras_model_path(str(model_uri)))

    metrics = score_model(os.path.join(examples, "Split-train"),
                          os.path.join(examples, "Split-eval"), transform, str(model_uri),
                          profile.evaluator.batch_size)
    def decision(evaluator: Any, baseline: float | None) -> tuple[bool, str]:
        criteria = Criteria(evaluator.perplexity_threshold, evaluator.baseline_tolerance,
                            evaluator.max_unigram_ratio)
        return blessing_decision(metrics[PERPLEXITY], metrics[UNIGRAM_PERPLEXITY], baseline,
                                 criteria)

    # The smoke gate, with the smoke run's blessed model as the baseline, as in a second run.
    blessed, message = decision(
        profile.evaluator, first.output("TextLmEvaluator", "blessing").properties[PERPLEXITY])
    _refused_and_not_pushed(tmp_path, blessed, message, f"perplexity {metrics[PERPLEXITY]:.2f}")
    assert "last blessed" in message
    # With no baseline (a first run), under the smoke and the demo profile's criteria (book's
    # are demo's): shuffled targets leave a bag of the window's words, which still beats the
    # unigram model a little, so the ratio to the unigram perplexity is what refuses it.
    for evaluator in (profile.evaluator, TEXT_PROFILES["demo"].evaluator):
        first_blessed, first_message = decision(evaluator, None)
        assert not first_blessed and "x unigram perplexity" in first_message, first_message
    if degraded == "zero steps":
        assert "x unigram perplexity" in message and "threshold" in message
    print(f"\ntext LM {degraded}: smoke gate: {message}\n  demo gate, no baseline: "
          f"{decision(TEXT_PROFILES['demo'].evaluator, None)[1]}\n  smoke gate, no baseline: "
          f"{decision(profile.evaluator, None)[1]}")


@soak
@pytest.mark.slow
@pytest.mark.parametrize("degraded", ["zero steps", "pure noise"])
def test_a_degraded_gan_is_never_blessed_and_the_gate_says_why(gan_smoke_run, tmp_path, degraded):
    import keras
    import tensorflow_transform as tft

    from components.common.evaluation import decide
    from components.images.data import image_dataset, keras_model_path, split_files
    from components.images.evaluate import KID, KidSettings, gan_checks, gan_metrics
    from components.images.gan_trainer import KERAS_FILE, adam
    from models.gan import build_gan
    from pipeline.profiles import GAN_PROFILES

    first, profile = gan_smoke_run.first, gan_smoke_run.profile
    transform = first.output("Transform", "transform_graph").uri
    examples = first.output("Transform", "transformed_examples").uri
    trainer, evaluator = profile.trainer, profile.evaluator
    keras.utils.set_random_seed(trainer.seed)
    gan = build_gan((28, 28, 1), trainer.latent_dim, trainer.width, seed=trainer.seed)
    if degraded == "pure noise":  # the smoke schedule, on noise of the same shape
        gan.compile(d_optimizer=adam(trainer), g_optimizer=adam(trainer),
                    loss_fn=keras.losses.BinaryCrossentropy())
        train = image_dataset(split_files(examples, "train"), tft.TFTransformOutput(transform),
                              trainer.batch_size, repeat=True)
        gan.fit(_noise_like(train, trainer.seed), epochs=trainer.epochs,
                steps_per_epoch=trainer.steps_per_epoch, verbose=0)
    model_uri = tmp_path / "model"
    keras_path = Path(keras_model_path(str(model_uri), KERAS_FILE))
    keras_path.parent.mkdir(parents=True)
    gan.generator.save(keras_path)

    kid = KidSettings(evaluator.kid_images, evaluator.kid_image_size, evaluator.kid_weights,
                      evaluator.kid_num_subsets, evaluator.kid_subset_size, evaluator.seed)
    metrics = gan_metrics(split_files(examples, "eval"), transform, str(model_uri), kid,
                          first.output("DigitClassifierTrainer", "model").uri)
    blessed, message = decide(gan_checks(
        metrics, max_kid=evaluator.max_kid, max_untrained_ratio=evaluator.max_untrained_ratio,
        baseline=first.output("GanEvaluator", "blessing").properties[KID],
        baseline_tolerance=evaluator.baseline_tolerance,
        min_classifier_score=evaluator.min_classifier_score,
        max_classifier_fid_ratio=evaluator.max_classifier_fid_ratio))
    _refused_and_not_pushed(tmp_path, blessed, message, "classifier score")
    # An image folder has no classifier: KID alone, with no baseline (a first run), under the
    # demo and the smoke profile's criteria (each a fraction of the untrained generator's KID).
    kid_only = {name: value for name, value in metrics.items() if "classifier" not in name}

    def kid_decision(settings: Any) -> tuple[bool, str]:
        return decide(gan_checks(
            kid_only, max_kid=settings.max_kid, max_untrained_ratio=settings.max_untrained_ratio,
            baseline=None, baseline_tolerance=settings.baseline_tolerance,
            min_classifier_score=0.0, max_classifier_fid_ratio=1.0))

    demo_blessed, demo_message = kid_decision(GAN_PROFILES["demo"].evaluator)
    assert not demo_blessed and "untrained generator's KID" in demo_message, demo_message
    smoke_blessed, smoke_message = kid_decision(evaluator)
    assert not smoke_blessed, smoke_message
    print(f"\nGAN {degraded}: smoke gate: {message}\n  demo gate, KID only, no baseline: "
          f"{demo_message}\n  smoke gate, KID only, no baseline: {smoke_message}")
