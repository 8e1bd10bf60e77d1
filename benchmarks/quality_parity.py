"""Model quality and training speed: genpipe's Trainers beside the chapter's own Keras code.

    .venv/bin/python benchmarks/quality_parity.py --json out/bench/quality_parity.json
    .venv/bin/python benchmarks/quality_parity.py --profile smoke --models vae   # quicker
    .venv/bin/python benchmarks/quality_parity.py --speed 3   # throughput only, side by side

For the LM, the VAE and the GAN, on one profile (default `demo`):
- **genpipe**: the Trainer's own `run_fn` (the tf.data path from Transform's gzipped TFRecords,
  its callbacks and export), with the profile's settings and the seed changed;
- **reference**: the chapter's model written here (`benchmarks/reference/`), plain Keras
  `fit` on numpy arrays holding the same transformed train split, the same batch size, number
  of steps, optimizer and learning rate.
Both are scored by genpipe's held-out evaluator code on the same eval split: perplexity with
padding masked (LM), negative ELBO in nats (VAE), KID and the digit classifier's scores (GAN).
Each (model, side, seed) runs in a fresh process, seeds interleaved so that the two sides
share the machine's state. Throughput is training examples per second over the train steps
only (from the end of the first step, which traces the graph, to the end of each epoch's last
step; validation and epoch-end callbacks are outside it), and per second of the process's CPU
time over the same steps. Runs minutes apart on a shared machine vary by up to 2x, so
`--speed ROUNDS` measures throughput alone: one process per model alternates short runs of the
two sides ROUNDS times and reports medians and their ratio.

The Transform output comes from a genpipe run of the three pipelines on `--root` (run here
first when the root has none). Results: docs/benchmarks.md, "Quality and speed parity".
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODELS = ("text", "vae", "gan")
SIDES = ("reference", "genpipe")
# The held-out metric each model is judged on, and whether lower is better.
METRICS = {"text": ("perplexity", True), "vae": ("negative_elbo", True), "gan": ("kid", True)}
EXTRA_METRICS = {"gan": (("classifier_score", False), ("classifier_fid", True))}
MIN_SPEED_RATIO = 0.9  # genpipe's examples/s at least this x the reference's
# `--speed`: train steps per side and round (10-30 s of steps at the demo profile's batch)
SPEED_STEPS = {"text": 150, "vae": 300, "gan": 100}


# -- locating the pipeline's artifacts -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Artifacts:
    """What a worker trains and scores on: Transform's output (and the digit classifier)."""

    transform_graph: str
    train_files: list[str]
    eval_files: list[str]
    classifier: str | None = None


def _latest_output(store: Any, pipeline: str, component: str, key: str) -> str | None:
    """The uri of output `key` of the newest finished execution of `component` in `pipeline`."""
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.status import outputs

    context = store.get_context_by_type_and_name("pipeline", pipeline)
    if context is None:
        return None
    types = {t.id: t.name for t in store.get_execution_types()}
    done = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    for execution in sorted(store.get_executions_by_context(context.id), key=lambda e: -e.id):
        if types.get(execution.type_id, "").endswith(component) and \
                execution.last_known_state in done:
            found = outputs(store, execution.id).get(key)
            if found is not None:
                return found.uri
    return None


def find_artifacts(root: str, model: str, profile: str) -> Artifacts | None:
    """The newest Transform output (and classifier) of `model`'s pipeline on `root`."""
    from components.images.data import split_files
    from pipeline.registry import MODELS as REGISTRY
    from pipeline.status import open_store

    store = open_store(root)
    if store is None:
        return None
    name = REGISTRY[model].pipeline_name(profile)
    graph = _latest_output(store, name, "Transform", "transform_graph")
    examples = _latest_output(store, name, "Transform", "transformed_examples")
    if graph is None or examples is None:
        return None
    classifier = _latest_output(store, name, "DigitClassifierTrainer", "model")
    return Artifacts(graph, split_files(examples, "train"), split_files(examples, "eval"),
                     classifier)


# -- timing the train steps ------------------------------------------------------------------


def train_timer(batch_size: int):
    """A Keras callback that sums the seconds, process CPU seconds (all threads, the input
    pipeline's included) and examples of the train steps (see the module docstring)."""
    import keras

    class TrainTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self.cpu_seconds, self.examples, self.steps = 0.0, 0.0, 0, 0
            self._last: tuple[float, float] | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._last = (time.perf_counter(), time.process_time()) if self.steps else None

        def on_train_batch_end(self, batch, logs=None):
            now = (time.perf_counter(), time.process_time())
            if self._last is not None:
                self.seconds += now[0] - self._last[0]
                self.cpu_seconds += now[1] - self._last[1]
                self.examples += batch_size
            self._last = now
            self.steps += 1

    return TrainTimer()


def timing_fit(current_timer) -> None:
    """Adds `current_timer()` to every `keras.Model.fit` call of this process (genpipe's `run_fn`
    builds its own callbacks; this is how the benchmark times its train steps without changing
    it)."""
    import keras

    original = keras.Model.fit

    def fit(self, *args, callbacks=None, **kwargs):
        return original(self, *args, callbacks=[*(callbacks or []), current_timer()], **kwargs)

    keras.Model.fit = fit


# -- one side of one model, in its own process ----------------------------------------------


def _profile(model: str, profile: str):
    from pipeline.profiles import get_profile
    from pipeline.registry import MODELS as REGISTRY

    return get_profile(REGISTRY[model].profiles, profile)


def _run_genpipe(model: str, settings: Any, artifacts: Artifacts, workdir: str) -> str:
    """Runs the model's Trainer `run_fn`; returns the Model artifact folder it wrote."""
    import importlib

    from tfx.components.trainer.fn_args_utils import FnArgs

    from pipeline.registry import MODELS as REGISTRY

    module, function = REGISTRY[model].stages.run_fn.rsplit(".", 1)
    model_uri = os.path.join(workdir, "model")
    fn_args = FnArgs(
        train_files=artifacts.train_files, eval_files=artifacts.eval_files,
        transform_output=artifacts.transform_graph,
        serving_model_dir=os.path.join(model_uri, "Format-Serving"),
        model_run_dir=os.path.join(workdir, "logs"),
        custom_config=dataclasses.asdict(settings),
    )
    getattr(importlib.import_module(module), function)(fn_args)
    return model_uri


def _text_arrays(files: list[str], transform_output):
    import numpy as np

    from components.text.data import lm_dataset

    inputs, targets = zip(*((x.numpy(), y.numpy())
                            for x, y in lm_dataset(files, transform_output, 4096)), strict=True)
    return np.concatenate(inputs), np.concatenate(targets)


def _enough(arrays: tuple, settings: Any) -> tuple:
    """With `steps_per_epoch` (genpipe repeats its dataset), `arrays` drawn in shuffled passes
    until they hold every step's batch: Keras' `fit` on arrays stops at their end instead."""
    import numpy as np

    if not settings.steps_per_epoch:
        return arrays
    needed = settings.epochs * settings.steps_per_epoch * settings.batch_size
    rng = np.random.default_rng(settings.seed)
    count = len(arrays[0])
    order = np.concatenate([rng.permutation(count) for _ in range(-(-needed // count))])
    return tuple(array[order[:needed]] for array in arrays)


def _fit_reference(model: str, settings: Any, artifacts: Artifacts, callbacks: list,
                   workdir: str):
    """Trains the chapter's model on numpy arrays with `callbacks`; returns it (its generator for
    the GAN, saved where genpipe's evaluator looks)."""
    import keras
    import tensorflow_transform as tft

    from components.images.data import image_shape, keras_model_path, load_images

    transform_output = tft.TFTransformOutput(artifacts.transform_graph)
    steps = settings.steps_per_epoch or None
    if model == "text":
        from benchmarks.reference.text_lm import build_reference_lm
        from components.text.data import vocabulary

        inputs, targets = _enough(_text_arrays(artifacts.train_files, transform_output),
                                  settings)
        lm = build_reference_lm(len(vocabulary(transform_output)), settings.sequence_length,
                                settings.embed_dim, settings.latent_dim, settings.num_heads,
                                settings.learning_rate)
        lm.fit(inputs, targets, batch_size=settings.batch_size, epochs=settings.epochs,
               steps_per_epoch=steps, callbacks=callbacks, verbose=2)
        return lm
    images, = _enough((load_images(artifacts.train_files, transform_output)[0],), settings)
    shape = image_shape(transform_output)
    if model == "vae":
        from benchmarks.reference.vae import build_reference_vae

        vae = build_reference_vae(settings.latent_dim, shape, settings.learning_rate,
                                  settings.seed)
        vae.fit(images, batch_size=settings.batch_size, epochs=settings.epochs,
                steps_per_epoch=steps, callbacks=callbacks, verbose=2)
        return vae
    from benchmarks.reference.gan import build_reference_gan

    gan = build_reference_gan(shape, settings.latent_dim, settings.width,
                              settings.learning_rate, settings.adam_beta_1, settings.seed)
    gan.fit(images, batch_size=settings.batch_size, epochs=settings.epochs,
            steps_per_epoch=steps, callbacks=callbacks, verbose=2)
    from components.images.gan_trainer import KERAS_FILE

    path = keras_model_path(os.path.join(workdir, "model"), KERAS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    gan.generator.save(path)
    return keras.saving.load_model(path, compile=False)


def _score(model: str, trained, evaluator: Any, artifacts: Artifacts, model_uri: str) -> dict:
    """genpipe's held-out evaluator code on `trained` (a Keras model) or on `model_uri`."""
    import tensorflow_transform as tft

    transform_output = tft.TFTransformOutput(artifacts.transform_graph)
    if model == "text":
        from components.text.data import lm_dataset
        from models.text.metrics import perplexity

        held_out = lm_dataset(artifacts.eval_files, transform_output, evaluator.batch_size)
        return {"perplexity": perplexity(trained, held_out)}
    if model == "vae":
        from components.images.data import load_images
        from models.vae import negative_elbo

        held_out, _ = load_images(artifacts.eval_files, transform_output)
        return {"negative_elbo": negative_elbo(trained, held_out, seed=evaluator.seed)}
    from components.images.evaluate import KidSettings, gan_metrics

    kid = KidSettings(evaluator.kid_images, evaluator.kid_image_size, evaluator.kid_weights,
                      evaluator.kid_num_subsets, evaluator.kid_subset_size, evaluator.seed)
    scores = gan_metrics(artifacts.eval_files, artifacts.transform_graph, model_uri, kid,
                         artifacts.classifier)
    return {key: scores[key] for key in ("kid", "untrained_kid", "classifier_score",
                                         "classifier_fid") if key in scores}


def run_worker(model: str, side: str, seed: int, profile_name: str, artifacts: Artifacts) -> dict:
    """Trains one side of one model with one seed and scores it; returns the result row."""
    import keras

    profile = _profile(model, profile_name)
    settings = dataclasses.replace(profile.trainer, seed=seed)
    timer = train_timer(settings.batch_size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"parity-{model}-{side}-") as workdir:
        if side == "genpipe":
            timing_fit(lambda: timer)
            model_uri = _run_genpipe(model, settings, artifacts, workdir)
            trained = _load_genpipe(model, model_uri)
        else:
            keras.utils.set_random_seed(seed)
            trained = _fit_reference(model, settings, artifacts, [timer], workdir)
            model_uri = os.path.join(workdir, "model")
        wall = time.perf_counter() - started
        metrics = _score(model, trained, profile.evaluator, artifacts, model_uri)
    return {
        "model": model, "side": side, "seed": seed, "profile": profile_name,
        "batch_size": settings.batch_size, "train_steps": timer.steps,
        **_speed(timer), "trainer_wall_seconds": round(wall, 1), **metrics,
    }


def _speed(timer) -> dict:
    return {
        "timed_examples": timer.examples, "timed_seconds": round(timer.seconds, 2),
        "timed_cpu_seconds": round(timer.cpu_seconds, 2),
        "examples_per_second": round(timer.examples / timer.seconds, 1) if timer.seconds else None,
        "examples_per_cpu_second":
            round(timer.examples / timer.cpu_seconds, 1) if timer.cpu_seconds else None,
    }


def run_speed_worker(model: str, profile_name: str, artifacts: Artifacts, rounds: int) -> list:
    """Throughput side by side in one process: `rounds` alternations of genpipe's Trainer and
    the reference's `fit`, each for `SPEED_STEPS[model]` steps (one epoch), so that the
    machine's drifts hit both sides alike. No scoring."""
    import keras

    settings = dataclasses.replace(_profile(model, profile_name).trainer, epochs=1,
                                   steps_per_epoch=SPEED_STEPS[model])
    timing_fit(lambda: timer)  # late-bound: each fit gets the timer of its round and side
    rows = []
    for index in range(rounds):
        for side in SIDES:
            timer = train_timer(settings.batch_size)
            with tempfile.TemporaryDirectory(prefix=f"speed-{model}-{side}-") as workdir:
                keras.utils.set_random_seed(settings.seed)
                if side == "genpipe":
                    _run_genpipe(model, settings, artifacts, workdir)
                else:
                    _fit_reference(model, settings, artifacts, [], workdir)
            rows.append({"model": model, "side": side, "round": index,
                         "profile": profile_name, "batch_size": settings.batch_size,
                         "train_steps": timer.steps, **_speed(timer)})
            print(json.dumps(rows[-1]), flush=True)
            keras.backend.clear_session()
    return rows


def _load_genpipe(model: str, model_uri: str):
    import keras

    if model == "text":
        import models.text.lm  # noqa: F401 (registers the LM's layers)
        from components.text.data import keras_model_path

        return keras.saving.load_model(keras_model_path(model_uri), compile=False)
    import models.vae  # noqa: F401 (registers the VAE classes)
    from components.images.data import keras_model_path
    from components.images.gan_trainer import KERAS_FILE as GAN_FILE
    from components.images.vae_trainer import KERAS_FILE as VAE_FILE

    filename = VAE_FILE if model == "vae" else GAN_FILE
    return keras.saving.load_model(keras_model_path(model_uri, filename), compile=False)


# -- the driver ------------------------------------------------------------------------------


def ensure_runs(root: str, models: list[str], profile: str) -> dict[str, Artifacts]:
    """Each model's artifacts on `root`, running `genpipe run` for those that have none."""
    missing = [model for model in models if find_artifacts(root, model, profile) is None]
    if missing:
        print(f"running genpipe run {','.join(missing)} --profile {profile} --root {root}",
              flush=True)
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "genpipe"), "run",
                        ",".join(missing), "--profile", profile, "--root", root], check=True)
    found = {model: find_artifacts(root, model, profile) for model in models}
    absent = [model for model, artifacts in found.items() if artifacts is None]
    if absent:
        raise SystemExit(f"no Transform output for {absent} on {root} after genpipe run")
    return found


def spawn(job: dict, quiet: bool) -> Any:
    """Runs one worker job in a fresh Python process and returns what it wrote."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps({**job, "out": result.name})],
            check=True, stdout=subprocess.DEVNULL if quiet else None,
        )
        return json.load(open(result.name))


def speed_summary(rows: list[dict], model: str) -> dict:
    """Median examples/s (wall and CPU) per side, and genpipe's ratio to the reference."""
    summary: dict[str, Any] = {}
    for key in ("examples_per_second", "examples_per_cpu_second"):
        medians = [statistics.median(row[key] for row in rows
                                     if row["model"] == model and row["side"] == side)
                   for side in SIDES]
        summary[key] = dict(zip(SIDES, medians, strict=True))
        summary[key]["ratio"] = round(medians[1] / medians[0], 3)
    summary["met"] = summary["examples_per_second"]["ratio"] >= MIN_SPEED_RATIO
    return summary


def speed_table(summary: dict, rounds: int) -> str:
    """The speed table for docs/benchmarks.md."""
    lines = ["| model | steps x rounds | reference ex/s | genpipe ex/s | ratio | "
             "reference ex/CPU-s | genpipe ex/CPU-s | CPU ratio |", "|---" * 8 + "|"]
    for model, check in summary.items():
        wall, cpu = check["examples_per_second"], check["examples_per_cpu_second"]
        lines.append(f"| {model} | {SPEED_STEPS[model]} x {rounds} | {wall['reference']:.0f} | "
                     f"{wall['genpipe']:.0f} | {wall['ratio']:.2f} | {cpu['reference']:.0f} | "
                     f"{cpu['genpipe']:.0f} | {cpu['ratio']:.2f} |")
    return "\n".join(lines)


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.fmean(values) if values else None


def verdicts(rows: list[dict], model: str) -> dict:
    """genpipe against the reference: metric within the reference's seed spread (its mean no
    worse than the worst reference seed). Throughput is judged by `--speed` (speed_summary):
    these runs, minutes apart, are too noisy for a ratio."""
    sides = {side: [row for row in rows if row["model"] == model and row["side"] == side]
             for side in SIDES}
    result = {}
    for metric, lower_is_better in (METRICS[model], *EXTRA_METRICS.get(model, ())):
        reference = [row[metric] for row in sides["reference"] if metric in row]
        ours = _mean(sides["genpipe"], metric)
        if not reference or ours is None:
            continue
        worst = max(reference) if lower_is_better else min(reference)
        result[metric] = {
            "genpipe_mean": ours, "reference_mean": statistics.fmean(reference),
            "reference_worst": worst,
            "as_good": ours <= worst if lower_is_better else ours >= worst,
        }
    return result


def table(rows: list[dict], summary: dict) -> str:
    """The markdown table for docs/benchmarks.md."""
    lines = ["| model | metric | reference (seeds) | genpipe (seeds) | as good | ref ex/s | "
             "genpipe ex/s |", "|---" * 7 + "|"]
    for model, checks in summary.items():
        metric = METRICS[model][0]
        values = {side: ", ".join(f"{row[metric]:.4g}" for row in rows
                                  if row["model"] == model and row["side"] == side)
                  for side in SIDES}
        speeds = {side: ", ".join(f"{row['examples_per_second']:.0f}" for row in rows
                                  if row["model"] == model and row["side"] == side)
                  for side in SIDES}
        check = checks.get(metric, {})
        lines.append(f"| {model} | {metric} | {values['reference']} | {values['genpipe']} | "
                     f"{'yes' if check.get('as_good') else 'no'} | {speeds['reference']} | "
                     f"{speeds['genpipe']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo", help="smoke, demo or book")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: text,vae,gan")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--root", default="out/bench/parity-root",
                        help="genpipe root with (or to get) the pipelines' Transform output")
    parser.add_argument("--speed", type=int, default=0, metavar="ROUNDS",
                        help="measure throughput only: ROUNDS alternations of both sides in one "
                             "process per model (SPEED_STEPS steps each), no scoring")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        artifacts = Artifacts(**job["artifacts"])
        if "rounds" in job:
            result = run_speed_worker(job["model"], job["profile"], artifacts, job["rounds"])
        else:
            result = run_worker(job["model"], job["side"], job["seed"], job["profile"], artifacts)
        Path(job["out"]).write_text(json.dumps(result))
        return

    models = [model.strip() for model in args.models.split(",") if model.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; allowed: {', '.join(MODELS)}")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    root = os.path.abspath(args.root)
    found = ensure_runs(root, models, args.profile)
    rows = []
    if args.speed:
        for model in models:
            print(f"== {model} speed, {args.speed} rounds", flush=True)
            rows += spawn({"model": model, "profile": args.profile, "rounds": args.speed,
                           "artifacts": dataclasses.asdict(found[model])}, quiet=False)
        summary = {model: speed_summary(rows, model) for model in models}
        print(speed_table(summary, args.speed))
    else:
        for model in models:
            for seed in seeds:
                for side in SIDES:
                    print(f"== {model} {side} seed {seed}", flush=True)
                    rows.append(spawn({"model": model, "side": side, "seed": seed,
                                       "profile": args.profile,
                                       "artifacts": dataclasses.asdict(found[model])},
                                      quiet=side == "genpipe"))
                    print(json.dumps(rows[-1]), flush=True)
        summary = {model: verdicts(rows, model) for model in models}
        print(table(rows, summary))
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "profile": args.profile, "seeds": seeds, "rows": rows, "summary": summary,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
