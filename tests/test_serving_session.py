"""The server loads and runs models the way tensorflow_model_server does: each version in its own
graph and session (no Python object graph), and deadlines stop the computation. The deadline
tests watch a `python -m serving serve` process's CPU time in /proc."""

from __future__ import annotations

import argparse
import os
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import toy_models
from tensorflow_serving.apis import prediction_service_pb2_grpc
from test_serving import Server, free_port, outputs, predict_request

from serving import cli
from serving.errors import ServingError
from serving.predict import run_signature
from serving.rest import RestApi
from serving.servable import load_servable
from serving.server import DEFAULT_REST_API_TIMEOUT_MS

REST_TIMEOUT_MS = 1500
GRPC_TIMEOUT_S = 1.5
ENDLESS = 10**15  # SpinModel steps: decades of computing
X = np.arange(8, dtype=np.float32).reshape(2, 4) / 8


class KerasModule(tf.Module):
    """A Keras 3 model inside a tf.Module, saved with plain `tf.saved_model.save`.

    Keras 3 variables are not tf.Variables the module tracks: the object graph still loads and
    runs, but the saver in the MetaGraphDef does not restore them, so a session (TF Serving)
    fails with "Could not find variable" unless the module also tracks the backing variables.
    """

    def __init__(self, track_variables: bool):
        super().__init__()
        import keras

        keras.utils.set_random_seed(0)
        self.model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        if track_variables:
            self.extra = [v.value for v in self.model.variables]

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.model(x)}

    def signatures(self) -> dict:
        return {"serving_default": self.predict}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("exports")
    saved = {
        "counter1": toy_models.save(toy_models.CounterModel(1), scratch / "counter1"),
        "counter2": toy_models.save(toy_models.CounterModel(2), scratch / "counter2"),
        "scale": toy_models.save(toy_models.ScaleModel(), scratch / "scale"),
        "spin": toy_models.save(toy_models.SpinModel(), scratch / "spin"),
    }
    for name, track in (("keras_untracked", False), ("keras_tracked", True)):
        module = KerasModule(track)
        saved[name] = toy_models.save(module, scratch / name)
        saved[f"{name}_y"] = module.model(X).numpy()
    return saved


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name in ("spin", "keras_untracked", "keras_tracked"):
        toy_models.push(exports[name], root / name, 1)
    grpc_port, rest_port = free_port(), free_port()
    process = Server(
        [
            "--models_root", str(root),
            "--port", str(grpc_port),
            "--rest_api_port", str(rest_port),
            "--rest_api_timeout_in_ms", str(REST_TIMEOUT_MS),
            "--file_system_poll_wait_seconds", "0",
        ]
    )  # fmt: skip
    process.wait_for("genpipe model server:")
    process.grpc = f"127.0.0.1:{grpc_port}"
    process.rest = f"http://127.0.0.1:{rest_port}"
    yield process
    process.process.kill()
    process.process.wait()


@pytest.fixture(scope="module")
def predictions(server):
    with grpc.insecure_channel(server.grpc) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_while_and_after(pid: int, call) -> tuple[float, float, BaseException | None]:
    """Run ``call`` (which blocks until its deadline) on a thread; returns the CPU seconds the
    process used in 0.4 s while it ran, in the 1 s after it answered, and what it raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            raised.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    time.sleep(0.3)
    before = cpu_seconds(pid)
    time.sleep(0.4)
    busy = cpu_seconds(pid) - before
    thread.join(timeout=30)
    assert not thread.is_alive(), "the request never answered"
    before = cpu_seconds(pid)
    time.sleep(1.0)
    return busy, cpu_seconds(pid) - before, raised[0] if raised else None


def spin_request(steps: int):
    return predict_request("spin", {"steps": np.int64(steps)})


# -- the session path ------------------------------------------------------------------------


def test_untracked_keras_variables_run_in_the_object_graph_only(exports):
    """The premise of the server tests below: tf.saved_model.load runs this model."""
    loaded = tf.saved_model.load(str(exports["keras_untracked"]))
    y = loaded.signatures["serving_default"](x=tf.constant(X))["y"].numpy()
    np.testing.assert_allclose(y, exports["keras_untracked_y"], rtol=1e-6)
    servable = load_servable("m", 1, str(exports["keras_untracked"]))
    with pytest.raises(ServingError) as caught:
        run_signature(servable, "", {"x": X})
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Could not find variable" in caught.value.message
    servable.close()


def test_model_tf_serving_cannot_run_fails_here_too(predictions, server):
    with pytest.raises(grpc.RpcError) as caught:
        predictions.Predict(predict_request("keras_untracked", {"x": X}), timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Could not find variable" in caught.value.details()
    reply = requests.post(
        f"{server.rest}/v1/models/keras_untracked:predict", json={"inputs": X.tolist()}, timeout=30
    )
    assert reply.status_code == 400 and "Could not find variable" in reply.json()["error"]


def test_keras_model_with_tracked_variables_answers_like_keras(predictions, server, exports):
    expected = exports["keras_tracked_y"]
    response = predictions.Predict(predict_request("keras_tracked", {"x": X}), timeout=30)
    np.testing.assert_allclose(outputs(response)["y"], expected, rtol=1e-6)
    reply = requests.post(
        f"{server.rest}/v1/models/keras_tracked:predict", json={"inputs": X.tolist()}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    np.testing.assert_allclose(reply.json()["outputs"], expected, rtol=1e-6)


def test_versions_load_concurrently_each_in_its_own_graph(exports):
    jobs = [("counter", 1, "counter1"), ("counter", 2, "counter2"), ("scale", 1, "scale")] * 2
    with futures.ThreadPoolExecutor(len(jobs)) as pool:
        servables = list(
            pool.map(lambda job: load_servable(job[0], job[1], str(exports[job[2]])), jobs)
        )
    try:
        for servable in servables:
            if servable.name == "counter":
                result = run_signature(servable, "", {"x": np.float32([10])})
                assert result["version"].tolist() == [servable.version]
                assert result["y"].tolist() == [10 + servable.version]
            else:
                inputs = {"x": np.float32([[1, 2, 3]]), "temperature": np.float32([2])}
                assert run_signature(servable, "", inputs)["y"].tolist() == [[2, 4, 6]]
    finally:
        for servable in servables:
            servable.close()
    assert all(servable.closed for servable in servables)


def test_tables_are_filled_from_the_exported_asset(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\nc\n")
    export = toy_models.save(toy_models.VocabModel(vocab), tmp_path / "export")
    vocab.unlink()  # the init op must read the copy under assets/
    servable = load_servable("vocab", 1, str(export))
    words = np.array([b"c", b"a", b"zz"], dtype=object)
    assert run_signature(servable, "", {"word": words})["id"].tolist() == [2, 0, -1]
    servable.close()


# -- deadlines -------------------------------------------------------------------------------


def test_expired_deadline_answers_without_running(exports):
    servable = load_servable("spin", 1, str(exports["spin"]))
    began = time.monotonic()
    with pytest.raises(ServingError) as caught:
        run_signature(servable, "", {"steps": np.int64(ENDLESS)}, deadline=time.monotonic() - 1)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began < 1.0
    quick = run_signature(servable, "", {"steps": np.int64(5)}, deadline=time.monotonic() + 60)
    assert quick["count"].tolist() == 5 and quick["total"].tolist() == 0 + 1 + 2 + 0 + 1
    servable.close()


def test_grpc_deadline_stops_the_computation(predictions, server):
    def call() -> None:
        predictions.Predict(spin_request(ENDLESS), timeout=GRPC_TIMEOUT_S)

    busy, after, error = cpu_while_and_after(server.process.pid, call)
    assert isinstance(error, grpc.RpcError), error
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert busy > 0.2, f"the server was not computing ({busy:.2f} CPU s in 0.4 s)"
    assert after < 0.2, f"the server kept computing: {after:.2f} CPU s in the second after"
    # The session still answers.
    response = predictions.Predict(spin_request(1000), timeout=30)
    assert outputs(response)["count"].tolist() == 1000


def test_rest_timeout_stops_the_computation(server):
    url = f"{server.rest}/v1/models/spin:predict"
    replies: list[requests.Response] = []

    def call() -> None:
        replies.append(requests.post(url, json={"inputs": {"steps": ENDLESS}}, timeout=60))

    busy, after, error = cpu_while_and_after(server.process.pid, call)
    assert error is None, error
    (reply,) = replies
    assert reply.status_code == 504, reply.text
    assert "Deadline exceeded" in reply.json()["error"]
    assert busy > 0.2, f"the server was not computing ({busy:.2f} CPU s in 0.4 s)"
    assert after < 0.2, f"the server kept computing: {after:.2f} CPU s in the second after"
    quick = requests.post(url, json={"inputs": {"steps": 1000}}, timeout=30)
    assert quick.json() == {"outputs": {"count": 1000, "total": 999}}


def test_rest_timeout_flag_defaults_to_tf_serving_and_can_be_turned_off():
    def options(*argv: str):
        parser = argparse.ArgumentParser()
        cli.register(parser.add_subparsers())
        return cli._server_options(parser.parse_args(["serve", "--models_root", ".", *argv]))

    assert options().rest_api_timeout_in_ms == DEFAULT_REST_API_TIMEOUT_MS
    assert options("--rest_api_timeout_in_ms", "250").rest_api_timeout_in_ms == 250
    for off in (0, -1):
        assert RestApi(None, None, timeout_ms=off)._deadline() is None
