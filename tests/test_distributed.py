"""Distributed training: the strategy picker and precision without training, mixed precision on
a few steps, and the smoke VAE trained by two MultiWorkerMirroredStrategy workers on loopback
(the Transform output of the session's smoke VAE run), whose chief's export passes the serving
validation every pushed model passes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.common import distribution
from components.common.distribution import Cluster, parse_tf_config, policy_name, strategy_kind
from components.common.serving_validation import validate
from contracts import read_sidecar
from models import gan, vae
from pipeline.profiles import with_settings

REPO = Path(__file__).resolve().parents[1]
WORKERS = 2
# Each worker calls the Trainer's run_fn as TFX's executor would (only the attributes it reads).
WORKER = """
import json, sys, types
from absl import logging
logging.set_verbosity(logging.INFO)
from components.images import vae_trainer
vae_trainer.run_fn(types.SimpleNamespace(**json.loads(sys.argv[1])))
"""


def tf_config(workers: list[str], task_type: str = "worker", index: int = 0, **jobs) -> str:
    cluster = {"worker": workers, **jobs}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


# -- the picker ------------------------------------------------------------------------------


def test_tf_config_names_the_cluster_and_its_chief():
    hosts = ["127.0.0.1:1", "127.0.0.1:2"]
    assert parse_tf_config(None) is None and parse_tf_config(" ") is None
    assert parse_tf_config(json.dumps({"task": {"type": "worker", "index": 0}})) is None
    assert parse_tf_config(tf_config(hosts, index=1)) == Cluster(2, "worker", 1, False)
    assert parse_tf_config(tf_config(hosts)).is_chief
    assert not parse_tf_config(tf_config(hosts, index=1)).is_chief
    with_chief = parse_tf_config(tf_config(hosts, chief=["127.0.0.1:3"]))
    assert with_chief.workers == 3 and not with_chief.is_chief
    assert parse_tf_config(tf_config(hosts, "chief", chief=["127.0.0.1:3"])).is_chief


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "TF_CONFIG is not JSON"),
        (tf_config(["a:1"], ps=["b:2"]), "allowed jobs: chief, worker, evaluator"),
        (tf_config(["a:1"], "evaluator", evaluator=["b:2"]), "allowed: chief, worker"),
        (tf_config(["a:1", "b:2"], index=2), r"task index 2 is not one of the 2 'worker' hosts"),
    ],
)
def test_unusable_tf_config_is_refused_naming_what_is_allowed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_tf_config(text)


def test_strategy_order_given_then_cluster_then_gpus_then_default():
    two = Cluster(2, "worker", 0, False)
    one = Cluster(1, "worker", 0, False)
    assert strategy_kind(True, two, 4) == "given"
    assert strategy_kind(False, two, 4) == "multi_worker"
    assert strategy_kind(False, one, 2) == "mirrored"
    assert strategy_kind(False, None, 1) == "default"


def test_one_process_without_tf_config_trains_on_the_default_strategy(monkeypatch):
    monkeypatch.delenv(distribution.TF_CONFIG, raising=False)
    strategy = distribution.pick_strategy()
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1
    assert distribution.is_chief(strategy)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert distribution.fit_across_workers(model, strategy) is model
    assert "train_step" not in vars(model)  # one process: Keras' own steps
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    with mirrored.scope():
        assert distribution.pick_strategy() is mirrored  # the strategy a caller hands over


def test_precision_names_a_policy_per_device_and_refuses_others():
    assert policy_name("float32", on_gpu=True) == "float32"
    assert policy_name("mixed", on_gpu=True) == "mixed_float16"
    assert policy_name("mixed", on_gpu=False) == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision 'float16' is unknown; allowed: float32, mixed"):
        policy_name("float16", on_gpu=False)
    from pipeline.registry import MODELS

    with pytest.raises(ValueError, match="allowed: float32, mixed"):
        with_settings(MODELS["vae"].profiles["smoke"], "trainer", precision="half")
    with pytest.raises(ValueError, match="not supported by the text LM.*allowed: float32"):
        with_settings(MODELS["text"].profiles["smoke"], "trainer", precision="mixed")


def test_non_chief_outputs_go_to_a_removed_folder(tmp_path):
    with distribution.output_dir(str(tmp_path / "run"), chief=True) as path:
        assert path == str(tmp_path / "run")
    with distribution.output_dir(str(tmp_path / "run"), chief=False) as path:
        Path(path).mkdir()
        (Path(path) / "events").write_text("x")
    assert not Path(path).parent.exists() and not (tmp_path / "run").exists()


# -- mixed precision ------------------------------------------------------------------------------


def _images() -> np.ndarray:
    return np.random.default_rng(0).random((16, 28, 28, 1)).astype(np.float32)


def test_mixed_precision_on_cpu_computes_in_bfloat16_and_keeps_float32_outputs():
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("checks the CPU policy")
    strategy = tf.distribute.get_strategy()
    with distribution.building(strategy, "mixed") as name:
        model = vae.build_vae(2, seed=0)
        network = gan.build_gan((28, 28, 1), 8, 0.25, seed=0)
    assert name == "mixed_bfloat16" and keras.config.dtype_policy().name == "float32"
    conv = model.encoder.layers[1]
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert model.decoder.outputs[0].dtype == "float32"
    assert network.discriminator.outputs[0].dtype == "float32"
    results = model.train_step(tf.constant(_images()))  # eager: no tracing to pay for
    assert all(np.isfinite(float(value)) for value in results.values()), results
    copy = distribution.float32_copy(lambda: vae.build_vae(2, seed=0), model)
    assert copy.encoder.layers[1].compute_dtype == "float32"
    np.testing.assert_allclose(copy.decoder(np.zeros((1, 2), np.float32)),
                               model.decoder(np.zeros((1, 2), np.float32)), atol=0.02)


def test_mixed_float16_scales_the_gan_losses():
    """The GPU policy's loss scaling, on the CPU (float16 is emulated there: a few steps only)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        network = gan.build_gan((28, 28, 1), 8, 0.25, seed=0)
    finally:
        keras.config.set_dtype_policy(previous)
    assert isinstance(network.d_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(network.g_optimizer, keras.optimizers.LossScaleOptimizer)
    before = [w.numpy().copy() for w in network.generator.trainable_weights]
    results = network.train_step(tf.constant(_images()))  # eager: no tracing to pay for
    assert np.isfinite(float(results["g_loss"])) and np.isfinite(float(results["d_loss"]))
    after = network.generator.trainable_weights
    assert any(not np.array_equal(b, a.numpy()) for b, a in zip(before, after, strict=True))


# -- two workers ----------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Ports free now (the workers bind them a moment later: a small, accepted race)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _run_workers(fn_args: dict, logs: Path) -> list[str]:
    """Starts the workers together (MultiWorkerMirroredStrategy waits for all), returns logs."""
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(WORKERS)]
    workers = []
    for index in range(WORKERS):
        env = {**os.environ, "TF_CONFIG": tf_config(hosts, index=index),
               "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        log = (logs / f"worker{index}.log").open("w")
        workers.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(fn_args)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        ))
    deadline = time.monotonic() + 600
    try:
        for worker in workers:
            worker.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for worker in workers:
            if worker.poll() is None:  # a stuck peer: ours to stop
                worker.kill()
                worker.wait()
    texts = [(logs / f"worker{index}.log").read_text() for index in range(WORKERS)]
    for worker, text in zip(workers, texts, strict=True):
        assert worker.returncode == 0, text[-3000:]
    return texts


def test_two_workers_train_the_smoke_vae_and_the_chief_exports(vae_smoke_run, tmp_path):
    run = vae_smoke_run.first
    examples = run.output("Transform", "transformed_examples").uri
    settings = with_settings(vae_smoke_run.profile, "trainer", epochs=1, steps_per_epoch=2,
                             label_means_images=200).trainer
    model_dir = tmp_path / "model"
    fn_args = {
        "train_files": [os.path.join(examples, "Split-train", "*")],
        "eval_files": [os.path.join(examples, "Split-eval", "*")],
        "transform_output": run.output("Transform", "transform_graph").uri,
        "serving_model_dir": str(model_dir / "Format-Serving"),
        "model_run_dir": str(tmp_path / "model_run"),
        "custom_config": dataclasses.asdict(settings),
    }
    logs = _run_workers(fn_args, tmp_path)

    for index, text in enumerate(logs):  # both took the steps, in one 2-replica strategy
        trained = re.search(r"Trained (\d+) steps \((.*)\)", text)
        assert trained, text[-3000:]
        assert int(trained.group(1)) == settings.steps_per_epoch
        assert "'replicas': 2" in trained.group(2)
        assert f"'chief': {index == 0}" in trained.group(2)
    elsewhere = re.search(r"Exported the VAE .* to (\S+)", logs[1]).group(1)
    assert not Path(elsewhere).exists()  # the non-chief's export went to a removed folder
    assert len(list((tmp_path / "model_run" / "train").glob("events.out.tfevents.*"))) == 1
    assert (model_dir / "Format-Keras" / "vae.keras").is_file()

    export = model_dir / "Format-Serving"
    single = Path(run.output("Trainer", "model").uri) / "Format-Serving"
    assert read_sidecar(export)["signatures"] == read_sidecar(single)["signatures"]
    outcome = validate(str(export), "vae", str(tmp_path / "validation"))
    assert outcome.blessed, outcome.message
