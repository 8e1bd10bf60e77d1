"""The model manager in process: version policies, labels, failed loads, reference counting,
warmup; polling is driven by hand (poll_wait_seconds=0) so every step is deterministic."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf
import toy_models
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving import config as config_lib
from serving.errors import ServingError
from serving.manager import AVAILABLE, END, UNLOADING, ModelManager
from serving.predict import run_signature
from serving.servable import Servable, load_servable
from serving.warmup import WARMUP_FILE, replay_warmup


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return toy_models.save(toy_models.CounterModel(1), tmp_path_factory.mktemp("e") / "counter")


def make_config(base_path, policy: str = "", labels: str = "", name: str = "m"):
    text = (
        f'model_config_list {{ config {{ name: "{name}" base_path: "{base_path}" '
        f"{policy} {labels} }} }}"
    )
    return text_format.Parse(text, config_lib.ModelServerConfig())


def states(manager: ModelManager, name: str = "m") -> dict[int, str]:
    return {s.version: s.state_name for s in manager.model_status(name)}


class CountingLoader:
    def __init__(self):
        self.calls: list[int] = []
        self.servables: list[Servable] = []

    def __call__(self, name, version, path):
        self.calls.append(version)
        self.servables.append(load_servable(name, version, path))
        return self.servables[-1]


def test_default_policy_serves_the_latest_version_only(tmp_path, export):
    for version in (1, 2):
        toy_models.push(export, tmp_path / "m", version)
    manager = ModelManager(make_config(tmp_path / "m"), poll_wait_seconds=0)
    manager.start()
    assert states(manager) == {2: "AVAILABLE"}
    with manager.servable("m") as servable:
        assert servable.version == 2


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("model_version_policy { latest { num_versions: 2 } }", {2, 3}),
        ("model_version_policy { all {} }", {1, 2, 3}),
        ("model_version_policy { specific { versions: 1 versions: 3 versions: 9 } }", {1, 3}),
    ],
)
def test_version_policies(tmp_path, export, policy, expected):
    for version in (1, 2, 3):
        toy_models.push(export, tmp_path / "m", version)
    manager = ModelManager(make_config(tmp_path / "m", policy), poll_wait_seconds=0)
    manager.start()
    available = {v for v, state in states(manager).items() if state == "AVAILABLE"}
    assert available == expected
    for version in expected:
        with manager.servable("m", version=version) as servable:
            assert servable.version == version


def test_old_version_unloads_only_after_its_requests_finish(tmp_path, export):
    toy_models.push(export, tmp_path / "m", 1)
    manager = ModelManager(make_config(tmp_path / "m"), poll_wait_seconds=0)
    manager.start()
    with manager.servable("m") as held:
        toy_models.push(export, tmp_path / "m", 2)
        manager.poll_once()
        assert states(manager) == {2: "AVAILABLE", 1: "UNLOADING"}
        with manager.servable("m") as newer:
            assert newer.version == 2
        # The held version still answers while its request is in flight.
        result = run_signature(held, "serving_default", {"x": np.float32([1])})
        assert result["version"].tolist() == [1]
        with pytest.raises(ServingError) as caught:
            with manager.servable("m", version=1):
                pass
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert not held.closed
    assert states(manager) == {2: "AVAILABLE", 1: "END"}
    assert held.closed  # its session is freed once the last request let go
    assert not newer.closed
    manager.stop()
    assert newer.closed


def test_failed_version_keeps_previous_serving_and_is_retried_only_when_rewritten(tmp_path, export):
    toy_models.push(export, tmp_path / "m", 1)
    loader = CountingLoader()
    manager = ModelManager(make_config(tmp_path / "m"), poll_wait_seconds=0, loader=loader)
    manager.start()
    broken = tmp_path / "m" / "2"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00garbage")
    manager.poll_once()
    (status,) = manager.model_status("m", version=2)
    assert status.state == END and status.error_code != grpc.StatusCode.OK and status.error_message
    assert states(manager)[1] == "AVAILABLE"
    manager.poll_once()
    manager.poll_once()
    assert loader.calls == [1, 2]  # not retried while the files stay the same
    shutil.rmtree(broken)
    toy_models.push(export, tmp_path / "m", 2)  # a fixed push of the same version
    manager.poll_once()
    assert loader.calls == [1, 2, 2]
    assert states(manager) == {2: "AVAILABLE", 1: "END"}


def test_version_folder_without_saved_model_pb_is_ignored(tmp_path, export):
    toy_models.push(export, tmp_path / "m", 1)
    shutil.copytree(export / "variables", tmp_path / "m" / "5" / "variables")
    (tmp_path / "m" / "not_a_version").mkdir()
    manager = ModelManager(make_config(tmp_path / "m"), poll_wait_seconds=0)
    manager.start()
    assert states(manager) == {1: "AVAILABLE"}


def test_labels_resolve_and_are_checked(tmp_path, export):
    for version in (1, 2):
        toy_models.push(export, tmp_path / "m", version)
    policy = "model_version_policy { all {} }"
    labels = 'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'
    manager = ModelManager(make_config(tmp_path / "m", policy, labels), poll_wait_seconds=0)
    manager.start()
    with manager.servable("m", label="stable") as servable:
        assert servable.version == 1
    with pytest.raises(ServingError) as caught:
        with manager.servable("m", label="beta"):
            pass
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "stable" in caught.value.message  # names the labels that exist

    bad = make_config(tmp_path / "m", policy, 'version_labels { key: "next" value: 3 }')
    with pytest.raises(ServingError) as caught:
        manager.reload_config(bad)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    lenient = ModelManager(bad, poll_wait_seconds=0, allow_labels_for_unavailable=True)
    lenient.start()
    with pytest.raises(ServingError) as caught:
        with lenient.servable("m", label="next"):
            pass
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_models_root_picks_up_new_model_folders(tmp_path, export):
    toy_models.push(export, tmp_path / "a", 1)
    manager = ModelManager(models_root=str(tmp_path), poll_wait_seconds=0)
    manager.start()
    assert manager.model_names() == ["a"]
    toy_models.push(export, tmp_path / "b", 3)
    manager.poll_once()
    assert manager.model_names() == ["a", "b"]
    assert states(manager, "b") == {3: "AVAILABLE"}


def test_removed_model_unloads(tmp_path, export):
    toy_models.push(export, tmp_path / "m", 1)
    manager = ModelManager(make_config(tmp_path / "m"), poll_wait_seconds=0)
    manager.start()
    manager.reload_config(make_config(tmp_path / "m", name="other"))
    assert states(manager) == {1: "END"}
    with pytest.raises(ServingError):
        with manager.servable("m"):
            pass


def _warmup_log(inputs: dict[str, np.ndarray]) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    return log.SerializeToString()


def test_warmup_requests_run_before_a_version_is_available(tmp_path, export):
    good = toy_models.push(export, tmp_path / "m", 1)
    (good / WARMUP_FILE).parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(good / WARMUP_FILE)) as writer:
        for _ in range(3):
            writer.write(_warmup_log({"x": np.float32([1, 2])}))
    assert replay_warmup(load_servable("m", 1, str(good))) == 3

    bad = toy_models.push(export, tmp_path / "m", 2)
    (bad / WARMUP_FILE).parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(bad / WARMUP_FILE)) as writer:
        writer.write(_warmup_log({"x": np.int32([1])}))
    loader = CountingLoader()
    manager = ModelManager(
        make_config(tmp_path / "m", "model_version_policy { all {} }"),
        poll_wait_seconds=0,
        on_load=replay_warmup,
        loader=loader,
    )
    manager.start()
    (failed,) = manager.model_status("m", version=2)
    assert failed.state == END and "DT_INT32" in failed.error_message
    assert states(manager)[1] == "AVAILABLE"
    # The version whose warmup failed does not keep its session.
    assert {s.version: s.closed for s in loader.servables} == {1: False, 2: True}


def test_snapshot_lists_every_version_state(tmp_path, export):
    toy_models.push(export, tmp_path / "m", 1)
    manager = ModelManager(make_config(tmp_path / "m"), poll_wait_seconds=0)
    manager.start()
    assert manager.snapshot() == [("m", 1, AVAILABLE)]
    assert UNLOADING not in {state for _, _, state in manager.snapshot()}
