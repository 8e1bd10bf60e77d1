"""Components that write artifacts on a Kubeflow root (`gs://...`) use no local-only file call.

Each runs against TensorFlow's in-memory `ram://` filesystem from an empty working directory:
a local call (os.makedirs, open, os.rename) on a `ram://` path would fail or leave a `ram:`
folder there. The SavedModel exports themselves are not covered (see docs/kubeflow.md).
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.utils import path_utils, proto_utils

from components.common.serving_validation import RESPONSES_FILE, WARMUP_FILE, WARMUP_PATH

MODEL_FILES = {"saved_model.pb": b"graph", "variables/variables.index": b"index",
               "variables/variables.data-00000-of-00001": b"data"}


@pytest.fixture
def ram(tmp_path, monkeypatch):
    """A fresh `ram://` folder; the test runs in an empty local folder that must stay empty."""
    monkeypatch.chdir(tmp_path)
    yield f"ram://{uuid.uuid4().hex}"
    assert not os.listdir(tmp_path), "a local file call wrote into the working directory"


def _write(path: str, data: bytes) -> None:
    fileio.makedirs(os.path.dirname(path))
    with fileio.open(path, "wb") as handle:
        handle.write(data)


def _read(path: str) -> bytes:
    with fileio.open(path, "rb") as handle:
        return handle.read()


def _artifact(kind, uri: str):
    made = kind()
    made.uri = uri
    return made


def _toy_model(ram: str) -> tuple[object, object]:
    """A toy SavedModel folder and a ServingValidator blessing with its warmup file, on `ram://`
    (written once: ram:// appends when a file is opened "wb" again)."""
    model = _artifact(standard_artifacts.Model, f"{ram}/model")
    for name, data in MODEL_FILES.items():
        _write(os.path.join(path_utils.serving_model_dir(model.uri), name), data)
    infra = _artifact(standard_artifacts.InfraBlessing, f"{ram}/infra")
    infra.set_int_custom_property("blessed", 1)
    _write(os.path.join(infra.uri, WARMUP_FILE), b"requests")
    return model, infra


def _push(model: object, infra: object, base: str) -> object:
    """AtomicPushExecutor pushing `model` blessed by `infra` to `base`; the PushedModel."""
    from tfx import v1 as tfx

    from components.push import AtomicPushExecutor

    pushed_uri = f"{os.path.dirname(model.uri)}/pushed/{uuid.uuid4().hex}"
    pushed = _artifact(standard_artifacts.PushedModel, pushed_uri)
    destination = tfx.proto.PushDestination(
        filesystem=tfx.proto.PushDestination.Filesystem(base_directory=base))
    AtomicPushExecutor().Do(
        {"model": [model], "infra_blessing": [infra]}, {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(destination)},
    )
    return pushed


def test_the_pusher_publishes_a_version_on_ram_and_reuses_it(ram):
    model, infra = _toy_model(ram)
    base = f"{ram}/serving/toy"
    pushed = _push(model, infra, base)
    version = pushed.get_string_custom_property("pushed_version")
    assert [name.rstrip("/") for name in fileio.listdir(base)] == [version]
    for name, data in MODEL_FILES.items():
        assert _read(os.path.join(base, version, name)) == data
    assert _read(os.path.join(base, version, WARMUP_PATH)) == b"requests"
    assert pushed.get_int_custom_property("reused_version") == 0

    again = _push(model, infra, base)
    assert again.get_string_custom_property("pushed_version") == version
    assert again.get_int_custom_property("reused_version") == 1
    assert len(fileio.listdir(base)) == 1


def test_the_serving_validator_writes_its_files_on_ram(ram, tmp_path):
    from test_serving_validation import _serving_export

    from components.common.serving_validation import REPORT_FILE, read_prediction_logs, validate

    model_dir = tmp_path.parent / f"{tmp_path.name}-model"  # the replay process reads it
    _serving_export(model_dir)
    out = f"{ram}/blessing"
    outcome = validate(str(model_dir), "gan", out)
    assert outcome.blessed, outcome.message
    assert len(read_prediction_logs(os.path.join(out, WARMUP_FILE))) == 3
    assert len(read_prediction_logs(os.path.join(out, RESPONSES_FILE))) == 3
    assert json.loads(_read(os.path.join(out, REPORT_FILE)))["blessed"] is True
    assert _read(os.path.join(out, "samples", "decode.png")).startswith(b"\x89PNG")
    assert outcome.properties["samples"] == os.path.join(out, "samples")


def test_the_pretrained_export_writes_its_limits_on_ram(ram, monkeypatch):
    from components.pretrained import export

    def exported(model_name, export_dir, settings):  # the SavedModel itself is not covered
        return {"max_pixels": 64, "iterations": [1, 3]}, "random"

    monkeypatch.setattr(export, "export_pretrained", exported)
    model = _artifact(standard_artifacts.Model, f"{ram}/model")
    executor = export.ExportPretrainedModel.EXECUTOR_SPEC.executor_class()
    executor.Do({}, {"model": [model]},
                {"model_name": "deepdream", "settings": json.dumps({"weights": None})})
    limits = json.loads(_read(os.path.join(model.uri, export.LIMITS_FILE)))
    assert limits == {"max_pixels": 64, "iterations": [1, 3]}


def test_the_content_photo_gen_writes_its_records_on_ram(ram):
    import tensorflow as tf

    from components.fast_style import photos

    examples = _artifact(standard_artifacts.Examples, f"{ram}/examples")
    executor = photos.ContentPhotoGen.EXECUTOR_SPEC.executor_class()
    executor.Do({}, {"examples": [examples]}, {
        "source": photos.OFFLINE, "crop_size": 16, "crops_per_photo": 1, "scale_side": 32,
        "seed": 0})
    counts = {}
    for split in photos.SPLITS:
        files = fileio.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz"))
        counts[split] = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    assert counts == {"train": examples.get_int_custom_property("train_examples"),
                      "eval": examples.get_int_custom_property("eval_examples")}
    assert min(counts.values()) > 0


def test_the_fast_style_trainer_writes_its_metrics_on_ram(ram):
    from components.fast_style.trainer import METRICS_FILE, write_metrics

    write_metrics(f"{ram}/run", {"train_loss": 1.5})
    assert json.loads(_read(f"{ram}/run/{METRICS_FILE}")) == {"train_loss": 1.5}



def test_the_contract_sidecar_is_written_and_read_on_ram(ram):
    import contracts

    contract = contracts.contract_for("vae")
    written = contracts.write_sidecar(f"{ram}/export", contract, "vae", ["decode"],
                                      contract.limits, {"latent_dim": 2})
    assert fileio.exists(f"{ram}/export/{contracts.SIDECAR}")
    assert contracts.read_sidecar(f"{ram}/export") == written
    with pytest.raises(FileNotFoundError, match="no contract sidecar"):
        contracts.read_sidecar(f"{ram}/elsewhere")
