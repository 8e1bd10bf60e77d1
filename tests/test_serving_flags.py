"""`genpipe serve` takes tensorflow_model_server's flags: the deploy files' exact argument lists
start a server in process, booleans parse as TF Serving's, unimplemented flags are refused by
name, and the loading flags (config polling, tags, warmup, retries) do what they say. Also the
TF Serving metric names on the Prometheus page, and quiet start-up of every command."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import toy_models
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from serving import cli, flags
from serving.manager import END, LoadOptions, ModelManager
from serving.servable import load_servable
from serving.server import ModelServer, build_manager
from serving.warmup import WARMUP_FILE

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
METRICS_PATH = "/monitoring/prometheus/metrics"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="genpipe")
    cli.register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


@contextmanager
def serving(*argv: str) -> Iterator[ModelServer]:
    """`genpipe serve ARGV` in this process (what `serve_command` builds), on free ports."""
    args = parse(f"--port={free_port()}", f"--rest_api_port={free_port()}", *argv)
    manager = build_manager(**cli._manager_kwargs(args), **cli._model_source(args))
    server = ModelServer(manager, cli._server_options(args))
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1)


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class TokensModel(tf.Module):
    """A `generate` signature with a `num_tokens` output (the length of each prompt)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompt")])
    def generate(self, prompt):
        return {"text": prompt, "num_tokens": tf.strings.length(prompt)}

    def signatures(self) -> dict:
        return {"serving_default": self.generate, "generate": self.generate}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("exports")
    return {
        "counter1": toy_models.save(toy_models.CounterModel(1), scratch / "counter1"),
        "counter2": toy_models.save(toy_models.CounterModel(2), scratch / "counter2"),
        "tokens": toy_models.save(TokensModel(), scratch / "tokens"),
    }


# -- the deploy files' argument lists --------------------------------------------------------


def deploy_args(kind: str) -> list[str]:
    if kind == "compose":
        (service,) = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())[
            "services"
        ].values()
        return service["command"]
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["args"]


@pytest.mark.parametrize("kind", ["compose", "kubernetes"])
def test_the_deploy_argument_lists_serve_a_model(kind, tmp_path, exports):
    args = deploy_args(kind)
    root = tmp_path / "models"
    toy_models.push(exports["counter1"], root / "text_lm", 1)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    # The same files as in the containers, with /models/ as this test's model root.
    text = (DEPLOY / "models.config").read_text().replace('"/models/', f'"{root}/')
    (config_dir / "models.config").write_text(text)
    shutil.copy(DEPLOY / "monitoring.config", config_dir / "monitoring.config")
    rewritten = [arg.replace("=/config/", f"={config_dir}/") for arg in args]
    assert rewritten != args and not any("=/config/" in arg for arg in rewritten)
    with serving(*rewritten) as server:
        assert server._watcher is not None  # --model_config_file_poll_wait_seconds=60
        rest = f"http://127.0.0.1:{server.rest_port}"
        status = requests.get(f"{rest}/v1/models/text_lm", timeout=10).json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        reply = requests.post(
            f"{rest}/v1/models/text_lm:predict", json={"instances": [1.0]}, timeout=10
        )
        assert reply.json() == {"predictions": [{"version": 1, "y": 2.0}]}
        page = requests.get(f"{rest}{METRICS_PATH}", timeout=10).text
        assert ":tensorflow:serving:request_count" in page


# -- flag syntax -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag",
    ["allow_version_labels_for_unavailable_models", "enable_model_warmup", "enable_batching"],
)
def test_boolean_flags_take_tf_servings_spellings(flag):
    def value(*argv: str) -> bool:
        return getattr(parse("--models_root", ".", *argv), flag)

    assert value(f"--{flag}") is value(f"--{flag}=true") is value(f"--{flag}", "true") is True
    assert value(f"--{flag}=false") is value(f"--{flag}", "false") is value(f"--{flag}=0") is False
    assert not hasattr(parse("--models_root", "."), flag)  # unset: the default of its option


def test_flags_reach_the_server_and_loader_options():
    args = parse(
        "--model_config_file=x",
        "--model_config_file_poll_wait_seconds=5",
        "--saved_model_tags", "serve,tpu",
        "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_inter_op_parallelism", "3",
        "--enable_model_warmup=false",
        "--max_num_load_retries=1",
        "--load_retry_interval_micros=10",
        "--rest_api_num_threads=3",
        "--grpc_max_threads=5",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x",
        "--enable_batching",
        "--batching_parameters_file=batching.config",
    )  # fmt: skip
    options = cli._server_options(args)
    assert (options.rest_api_num_threads, options.workers) == (3, 5)
    assert options.grpc_channel_arguments == (
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.primary_user_agent", "x"),
    )
    assert options.model_config_file == "x" and options.model_config_file_poll_wait_seconds == 5
    assert options.enable_batching and options.batching_parameters_file == "batching.config"
    assert cli._load_options(args) == LoadOptions(
        saved_model_tags=("serve", "tpu"),
        intra_op_threads=2,
        inter_op_threads=3,
        enable_model_warmup=False,
        max_num_load_retries=1,
        load_retry_interval_micros=10,
    )
    defaults = cli._server_options(parse("--models_root", "."))
    assert defaults.port == flags.GRPC_PORT and not defaults.enable_batching
    assert cli._load_options(parse("--models_root", ".")) == LoadOptions()


@pytest.mark.parametrize("flag", sorted(flags.UNIMPLEMENTED))
def test_unimplemented_tf_serving_flags_are_refused_by_name(flag, capsys):
    for argv in ([f"--{flag}=1"], [f"--{flag}"]):
        with pytest.raises(SystemExit) as caught:
            parse("--models_root", ".", *argv)
        assert caught.value.code == 2
        error = capsys.readouterr().err
        assert f"--{flag} is a tensorflow_model_server flag" in error
        assert "does not implement" in error


def test_unknown_flags_get_argparses_error(capsys):
    with pytest.raises(SystemExit):
        parse("--models_root", ".", "--no_such_flag=1")
    assert "unrecognized arguments: --no_such_flag=1" in capsys.readouterr().err


def test_version_prints_genpipe_and_tensorflow_versions():
    result = subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"TensorFlow Library: {tf.__version__}" in result.stdout
    assert re.search(r"genpipe model server: \d", result.stdout)


# -- what the loading flags do ---------------------------------------------------------------


def _config(root: Path, label_version: int) -> str:
    return (
        f'model_config_list {{ config {{ name: "m" base_path: "{root}" '
        "model_version_policy { specific { versions: 1 versions: 2 } } "
        f'version_labels {{ key: "stable" value: {label_version} }} }} }}'
    )


def test_model_config_file_poll_moves_a_label(tmp_path, exports):
    root = tmp_path / "m"
    toy_models.push(exports["counter1"], root, 1)
    toy_models.push(exports["counter2"], root, 2)
    config = tmp_path / "models.config"
    config.write_text(_config(root, 1))
    argv = ["--model_config_file", str(config), "--model_config_file_poll_wait_seconds=0.2"]
    with serving(*argv) as server:
        assert server.manager.labels("m") == {"stable": 1}
        config.write_text("model_config_list { config { name: ")  # a broken edit is skipped
        time.sleep(0.5)
        assert server.manager.labels("m") == {"stable": 1}
        config.write_text(_config(root, 2))
        wait_until(lambda: server.manager.labels("m") == {"stable": 2})
        with server.manager.servable("m", label="stable") as servable:
            assert servable.version == 2


def test_an_unknown_saved_model_tag_fails_the_load_clearly(tmp_path, exports):
    toy_models.push(exports["counter1"], tmp_path / "m", 1)
    argv = ["--model_base_path", str(tmp_path / "m"), "--model_name=m"]
    with serving(*argv, "--saved_model_tags=serve,gpu", "--file_system_poll_wait_seconds=0") as s:
        (status,) = s.manager.model_status("m")
        assert status.state == END
        assert "no MetaGraphDef with tags 'gpu,serve'" in status.error_message
        assert "its tag sets: ['serve']" in status.error_message
    with serving(*argv, "--saved_model_tags=serve", "--file_system_poll_wait_seconds=0") as s:
        assert s.manager.model_status("m")[0].state_name == "AVAILABLE"


def test_enable_model_warmup_false_skips_the_warmup_replay(tmp_path, exports):
    version = toy_models.push(exports["counter1"], tmp_path / "m", 1)
    (version / WARMUP_FILE).parent.mkdir(parents=True)
    request = predict_pb2.PredictRequest()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.int32([1])))  # wrong dtype: fails
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(str(version / WARMUP_FILE)) as writer:
        writer.write(log.SerializeToString())
    argv = ["--model_base_path", str(tmp_path / "m"), "--file_system_poll_wait_seconds=0"]
    with serving(*argv) as server:  # warmup on (the default): the bad record fails the load
        assert "DT_INT32" in server.manager.model_status("default")[0].error_message
    with serving(*argv, "--enable_model_warmup=false") as server:
        assert server.manager.model_status("default")[0].state_name == "AVAILABLE"


def test_a_failed_load_is_retried_max_num_load_retries_times(tmp_path, exports):
    broken = tmp_path / "m" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"\x00garbage")
    calls = []

    def loader(name, version, path):
        calls.append(version)
        return load_servable(name, version, path)

    config = cli._model_source(parse("--model_base_path", str(tmp_path / "m")))["config"]
    options = LoadOptions(max_num_load_retries=2, load_retry_interval_micros=-1)
    manager = ModelManager(config, poll_wait_seconds=0, loader=loader, load_options=options)
    manager.start()
    for _ in range(4):
        manager.poll_once()
    assert calls == [1, 1, 1]  # the first attempt and two retries
    slow = ModelManager(
        config,
        poll_wait_seconds=0,
        loader=loader,
        load_options=LoadOptions(load_retry_interval_micros=60_000_000),
    )
    slow.start()
    slow.poll_once()
    assert calls == [1, 1, 1, 1]  # no retry before the interval
    manager.stop()
    slow.stop()


def test_grpc_channel_arguments_reach_the_grpc_server(tmp_path, exports):
    toy_models.push(exports["counter1"], tmp_path / "m", 1)
    argv = ["--model_base_path", str(tmp_path / "m"), "--file_system_poll_wait_seconds=0"]
    limit = "--grpc_channel_arguments=grpc.max_receive_message_length=64"
    with serving(*argv, limit, "--rest_api_num_threads=2") as server:
        assert server._rest.executor._max_workers == 2
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "default"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros(100, np.float32)))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- metrics ---------------------------------------------------------------------------------


def test_prometheus_page_has_tf_servings_and_genpipes_metrics(tmp_path, exports):
    root = tmp_path / "models"
    toy_models.push(exports["counter1"], root / "counter", 1)
    toy_models.push(exports["tokens"], root / "tokens", 1)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}')
    argv = ["--models_root", str(root), "--file_system_poll_wait_seconds=0.2"]
    with serving(*argv, f"--monitoring_config_file={monitoring}") as server:
        rest = f"http://127.0.0.1:{server.rest_port}"
        requests.post(f"{rest}/v1/models/counter:predict", json={"instances": [1.0]}, timeout=10)
        requests.post(f"{rest}/v1/models/counter:predict", json={"instances": ["x"]}, timeout=10)
        body = {"signature_name": "generate", "instances": ["abc", "de"]}
        assert requests.post(f"{rest}/v1/models/tokens:predict", json=body, timeout=10).ok
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "counter"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([1.0])))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
        toy_models.push(exports["counter2"], root / "counter", 2)  # version 1 unloads
        wait_until(lambda: server.manager.model_status("counter", version=1)[0].state == END)
        page = requests.get(f"{rest}{METRICS_PATH}", timeout=10).text
    list(text_string_to_metric_families(page))  # the whole page parses
    counter_v1 = root / "counter" / "1"
    expected = [
        "# TYPE :tensorflow:serving:request_count counter",
        ':tensorflow:serving:request_count{model_name="counter",status="OK"} 2',
        ':tensorflow:serving:request_count{model_name="counter",status="INVALID_ARGUMENT"} 1',
        "# TYPE :tensorflow:serving:request_latency histogram",
        ':tensorflow:serving:request_latency_count{model_name="counter",API="Predict",'
        'entrypoint="REST"} 1',
        ':tensorflow:serving:request_latency_count{model_name="counter",API="Predict",'
        'entrypoint="GRPC"} 1',
        ':tensorflow:serving:runtime_latency_count{model_name="counter",API="Predict",'
        'runtime="TF1"} 2',
        f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{counter_v1}",'
        'status="success"} 1',
        'genpipe_serving_generated_tokens_total{model="tokens",signature="generate",'
        'version="1"} 5.0',
        'genpipe_serving_model_loads_total{model="counter",status="success"} 2.0',
        'genpipe_serving_model_unloads_total{model="counter"} 1.0',
        'genpipe_serving_runtime_latency_seconds_count{model="counter",'
        'signature="serving_default",version="1"} 2.0',
        "# TYPE genpipe_serving_batch_size histogram",
        "# TYPE genpipe_serving_batch_queue_depth gauge",
    ]
    lines = page.splitlines()
    for line in expected:
        assert line in lines, f"{line!r} not on the page:\n{page}"
    assert re.search(
        rf':tensorflow:cc:saved_model:load_latency{{model_path="{counter_v1}"}} \d+', page
    )
    assert 'le="10"' in page and 'le="+Inf"' in page  # TF Serving's microsecond buckets


# -- quiet start-up --------------------------------------------------------------------------

NOISE = ("Unable to register", "non-supported Python version", "FutureWarning", "cuda")


@pytest.mark.parametrize(
    "argv",
    [
        ["genpipe", "serve", "--help"],
        ["genpipe", "status", "--root", "EMPTY"],
        [sys.executable, "-m", "serving", "serve", "--version"],
        [sys.executable, "-m", "client", "generate", "--help"],
    ],
    ids=["serve-help", "status", "python-m-serving", "python-m-client"],
)
def test_commands_start_without_library_noise(argv, tmp_path):
    if argv[0] == "genpipe":
        argv = [str(Path(sys.executable).parent / "genpipe"), *argv[1:]]
    argv = [str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    for noise in NOISE:
        assert noise not in result.stderr, result.stderr


def test_the_docs_flag_table_lists_every_flag():
    subparsers = argparse.ArgumentParser().add_subparsers()
    cli.register(subparsers)
    options = {
        option.removeprefix("--")
        for action in subparsers.choices["serve"]._actions
        for option in action.option_strings
        if option != "--help" and option.startswith("--")
    }
    docs = (REPO / "docs" / "serving.md").read_text()
    section = docs.split("## `genpipe serve`", 1)[1].split("\n## ", 1)[0]
    rows = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `--")]
    table = {name for cell in rows for name in re.findall(r"--(\w+)", cell)}
    assert table == options - set(flags.UNIMPLEMENTED)
    refused = section.split("Every other", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"`--(\w+)`", refused)) == set(flags.UNIMPLEMENTED)
