"""Faults (issue 13): the model server killed with SIGKILL under load and restarted; version
folders deleted, made unreadable or overwritten while they serve; a corrupt new version; a live
reload with a broken config. Each really breaks something; the versions already serving must
keep answering and the problem must show in GetModelStatus and the log.

The kill runs a `python -m serving serve` subprocess; the rest share one in-process server.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import toy_models
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2
from test_serving import Server, free_port

from serving.server import ModelServer, ServerOptions, build_manager

CLIENTS = 4  # threads sending requests while the server is killed
GARBAGE = b"this is not a SavedModel protobuf\n" * 4


def _config(entries: dict[str, tuple[Path, str]]) -> model_server_config_pb2.ModelServerConfig:
    """A model_config_list from name -> (base path, extra text-format fields)."""
    text = "model_config_list {\n"
    for name, (base, extra) in entries.items():
        text += f'  config {{ name: "{name}" base_path: "{base}" {extra} }}\n'
    return text_format.Parse(text + "}\n", model_server_config_pb2.ModelServerConfig())


def _predict(name: str, x: float = 1.0, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([x])))
    return request


def _status(models, name: str) -> list[tuple[int, str, str]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    response = models.GetModelStatus(request, timeout=30)
    return [
        (s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
         s.status.error_message)
        for s in response.model_version_status
    ]  # fmt: skip


# -- kill -9 under load, then restart ---------------------------------------------------------


def _load(address: str, rest: str, stop: threading.Event, results: list[str], index: int):
    """Send gRPC (even threads) or REST (odd) requests until ``stop``; record each outcome."""
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while not stop.is_set():
            try:
                if index % 2:
                    answer = requests.post(f"{rest}/v1/models/counter/labels/stable:predict",
                                           json={"instances": [1.0]}, timeout=10)  # fmt: skip
                    results.append("ok" if answer.ok else f"http {answer.status_code}")
                else:
                    stub.Predict(_predict("counter", version=2), timeout=10)
                    results.append("ok")
            except (grpc.RpcError, requests.RequestException) as error:
                results.append(type(error).__name__)
                time.sleep(0.05)


def test_kill_9_under_load_then_restart_serves_the_same(tmp_path):
    for version in (1, 2):
        toy_models.export_and_push(toy_models.CounterModel(version), tmp_path / "counter", version)
    toy_models.export_and_push(toy_models.StringsModel(), tmp_path / "strings", 1)
    config = _config({
        "counter": (tmp_path / "counter",
                    'model_version_policy { all {} } version_labels { key: "stable" value: 1 }'),
        "strings": (tmp_path / "strings", ""),
    })  # fmt: skip
    (tmp_path / "models.config").write_text(text_format.MessageToString(config))
    grpc_port, rest_port = free_port(), free_port()
    argv = ["--model_config_file", str(tmp_path / "models.config"), "--port", str(grpc_port),
            "--rest_api_port", str(rest_port), "--file_system_poll_wait_seconds", "0"]  # fmt: skip
    address, rest = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"
    probes = [_predict("counter", 3.0, version=1), _predict("counter", 3.0, version=2),
              _predict("counter", 3.0, label="stable"), _predict("counter", 3.0)]  # fmt: skip

    def observe() -> tuple[list, list[predict_pb2.PredictResponse]]:
        with grpc.insecure_channel(address) as channel:
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            states = [_status(models, name) for name in ("counter", "strings")]
            answers = [stub.Predict(p, timeout=30) for p in probes]  # compared by value
        return states, answers

    server = Server(argv)
    try:
        server.wait_for("genpipe model server:")
        before = observe()
        assert before[0][0] == [(2, "AVAILABLE", ""), (1, "AVAILABLE", "")]
        stop, results = threading.Event(), []
        threads = [
            threading.Thread(target=_load, args=(address, rest, stop, results, i))
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while results.count("ok") < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        served_before_kill = list(results)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        time.sleep(0.3)  # the clients now see a dead server
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert server.process.returncode == -signal.SIGKILL
        assert served_before_kill.count("ok") >= 20 and set(served_before_kill) == {"ok"}
        assert set(results) - {"ok"}, "no client noticed the kill"

        server = Server(argv)  # the same command, the same ports
        server.wait_for("genpipe model server:")
        assert observe() == before
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


# -- broken files and configs under a live in-process server ----------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A server on models alpha (v1), beta (v1) and gamma (v1), polled only when a test asks."""
    root = tmp_path_factory.mktemp("faults")
    for name, version in (("alpha", 1), ("beta", 1), ("gamma", 1)):
        toy_models.export_and_push(toy_models.CounterModel(version), root / name, version)
    config = _config({name: (root / name, "") for name in ("alpha", "beta", "gamma")})
    server = ModelServer(
        build_manager(config=config, poll_wait_seconds=0),
        ServerOptions(port=0, rest_api_port=0, workers=4),
    )
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    server.root, server.config = root, config
    server.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    server.models = model_service_pb2_grpc.ModelServiceStub(channel)
    yield server
    channel.close()
    server.stop(grace=1)


def _answers(live, name: str) -> float:
    response = live.stub.Predict(_predict(name, 1.0), timeout=30)
    return float(tf.make_ndarray(response.outputs["y"])[0])


def test_a_deleted_version_folder_keeps_serving_and_is_reported(live, caplog):
    assert _answers(live, "alpha") == 2.0
    shutil.rmtree(live.root / "alpha" / "1")
    with caplog.at_level(logging.ERROR, logger="genpipe.serving"):
        live.manager.poll_once()
    assert _answers(live, "alpha") == 2.0  # from memory
    [(version, state, message)] = _status(live.models, "alpha")
    assert (version, state) == (1, "AVAILABLE") and "gone or unreadable" in message
    assert "alpha version 1" in caplog.text and "gone or unreadable" in caplog.text
    # A new version takes over as usual, and the note goes with the old one.
    toy_models.export_and_push(toy_models.CounterModel(5), live.root / "alpha", 5)
    live.manager.poll_once()
    assert _answers(live, "alpha") == 6.0
    assert _status(live.models, "alpha")[0] == (5, "AVAILABLE", "")


def test_an_unreadable_or_overwritten_version_keeps_serving_and_is_reported(live, caplog):
    """chmod 000 where it denies reads; as root (where it does not) saved_model.pb is
    overwritten with garbage instead."""
    folder = live.root / "beta" / "1"
    as_root = os.geteuid() == 0
    if as_root:
        (folder / "saved_model.pb").write_bytes(GARBAGE)
        expected = "changed on disk"
    else:
        folder.chmod(0)
        expected = "gone or unreadable"
    try:
        with caplog.at_level(logging.ERROR, logger="genpipe.serving"):
            live.manager.poll_once()
        assert _answers(live, "beta") == 2.0
        [(version, state, message)] = _status(live.models, "beta")
        assert (version, state) == (1, "AVAILABLE") and expected in message, message
        assert expected in caplog.text
        assert _answers(live, "gamma") == 2.0  # the other models were polled as usual
    finally:
        folder.chmod(stat.S_IRWXU)


def test_a_corrupt_new_version_fails_alone(live, caplog):
    broken = toy_models.export_and_push(toy_models.CounterModel(2), live.root / "gamma", 2)
    (broken / "saved_model.pb").write_bytes(GARBAGE)
    with caplog.at_level(logging.ERROR, logger="genpipe.serving"):
        live.manager.poll_once()
    assert _answers(live, "gamma") == 2.0  # version 1 keeps serving
    states = _status(live.models, "gamma")
    assert [s[:2] for s in states] == [(2, "END"), (1, "AVAILABLE")]
    assert "not a SavedModel protobuf" in states[0][2]
    assert "loading gamma version 2 failed" in caplog.text
    with pytest.raises(grpc.RpcError) as caught:
        live.stub.Predict(_predict("gamma", version=2), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


BAD_CONFIGS = [
    ("a model listed twice", 'config { name: "alpha" base_path: "/x" } '
     'config { name: "alpha" base_path: "/y" }', "multiple times"),
    ("a name that climbs out", 'config { name: "../alpha" base_path: "/x" }', "'../alpha'"),
    ("a NUL in the base path", 'config { name: "alpha" base_path: "/x\\000y" }', "NUL"),
    ("an unknown platform", 'config { name: "alpha" base_path: "/x" model_platform: "onnx" }',
     "unsupported platform"),
]  # fmt: skip


@pytest.mark.parametrize("what, entries, words", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_a_broken_config_pushed_by_a_live_reload_is_refused(live, caplog, what, entries, words):
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(f"model_config_list {{ {entries} }}", request.config)
    before = {name: _status(live.models, name) for name in ("alpha", "beta", "gamma")}
    with caplog.at_level(logging.ERROR, logger="genpipe.serving"):
        with pytest.raises(grpc.RpcError) as caught:
            live.models.HandleReloadConfigRequest(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in caught.value.details() and words in caplog.text
    assert "model config reload refused" in caplog.text
    assert {name: _status(live.models, name) for name in before} == before
    assert _answers(live, "gamma") == 2.0


def test_a_reload_labelling_a_missing_version_keeps_the_labels(live):
    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(live.config)
    request.config.model_config_list.config[1].version_labels["stable"] = 99
    with pytest.raises(grpc.RpcError) as caught:
        live.models.HandleReloadConfigRequest(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'stable'" in caught.value.details() and "99" in caught.value.details()
    assert _answers(live, "beta") == 2.0 and live.manager.labels("beta") == {}
