"""ServingValidator: requests built from the contracts, the replay on TF Serving's loading path in
a fresh process, the checks of the responses, the warmup file in every pushed version.

The replay tests save tiny models (a few seconds each, mostly the child's `import tensorflow`);
the smoke tests read the session fixtures' pipelines (tests/fixtures_*.py), which run once.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import contracts
from components.common import serving_replay, serving_validation
from components.common.serving_validation import (
    WARMUP_FILE,
    WARMUP_PATH,
    Probe,
    build_probes,
    check_response,
    read_prediction_logs,
    validate,
)
from models import saved_model

LATENT = 4


class TinyGenerator(tf.Module):
    """A Keras 3 generator behind the GAN contract's `generate`/`decode` signatures."""

    def __init__(self):
        super().__init__()
        self.generator = keras.Sequential([
            keras.Input((LATENT,)),
            keras.layers.Dense(4 * 4, activation="sigmoid"),
            keras.layers.Reshape((4, 4, 1)),
        ])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="seed")])
    def generate(self, seed):
        z = tf.map_fn(lambda s: tf.random.stateless_normal([LATENT], tf.stack([s, 0])), seed,
                      fn_output_signature=tf.float32)
        return self._images(z)

    @tf.function(input_signature=[tf.TensorSpec([None, LATENT], tf.float32, name="z")])
    def decode(self, z):
        return self._images(z)

    def _images(self, z):
        images = tf.cast(tf.round(self.generator(z) * 255), tf.uint8)
        png = tf.map_fn(tf.io.encode_png, images, fn_output_signature=tf.string)
        return {"images": images, "png_bytes": png}

    def signatures(self) -> dict:
        return {"generate": self.generate, "serving_default": self.generate,
                "decode": self.decode}


GAN_INFO = {"latent_dim": LATENT, "image_shape": [4, 4, 1]}


def _old_style_export(path: Path) -> None:
    """`tf.saved_model.save` of the module: the Keras variables get no saver entry."""
    module = TinyGenerator()
    tf.saved_model.save(module, str(path), signatures=module.signatures())
    contract = contracts.contract_for("gan")
    contracts.write_sidecar(path, contract, "gan", list(module.signatures()), contract.limits,
                            GAN_INFO)


def _serving_export(path: Path) -> None:
    module = TinyGenerator()
    contract = contracts.contract_for("gan")
    saved_model.save(module, path, module.signatures(), contract=contract,
                     limits=contract.limits, info=GAN_INFO)


def test_a_keras_model_saved_the_old_way_is_refused_naming_each_signature(tmp_path):
    _old_style_export(tmp_path / "model")
    outcome = validate(str(tmp_path / "model"), "gan", str(tmp_path / "out"))
    assert not outcome.blessed
    assert outcome.message.startswith("not blessed: failed generate: ")
    assert outcome.message.count("Could not find variable") == 3
    assert outcome.properties["failed_signatures"] == "generate,serving_default,decode"


def test_the_same_model_saved_for_serving_is_blessed_with_its_warmup_requests(tmp_path):
    _serving_export(tmp_path / "model")
    outcome = validate(str(tmp_path / "model"), "gan", str(tmp_path / "out"))
    assert outcome.blessed, outcome.message
    assert outcome.properties["failed_signatures"] == ""
    assert all(outcome.properties[f"seconds_{key}"] > 0 for key in ("generate", "decode"))

    logs = read_prediction_logs(str(tmp_path / "out" / WARMUP_FILE))
    requests = [log.predict_log.request for log in logs]
    assert [r.model_spec.signature_name for r in requests] == [
        "generate", "serving_default", "decode"]
    assert {r.model_spec.name for r in requests} == {"gan"}
    assert tf.make_ndarray(requests[0].inputs["seed"]).tolist() == [0, 1]
    assert tf.make_ndarray(requests[2].inputs["z"]).shape == (2, LATENT)
    answers = read_prediction_logs(str(tmp_path / "out" / serving_validation.RESPONSES_FILE))
    images = tf.make_ndarray(answers[0].predict_log.response.outputs["images"])
    assert images.shape == (2, 4, 4, 1) and images.dtype == np.uint8
    assert (tmp_path / "out" / "samples" / "decode.png").is_file()


def _constant_png_module() -> tf.Module:
    """A fake `stylize` model that ignores its input and answers an 8x8 gray PNG."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image")])
    def stylize(image):
        gray = tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(128, tf.uint8)))
        return {"image_bytes": tf.fill(tf.shape(image), gray)}

    module.stylize = stylize
    return module


def test_a_stylizer_that_loses_the_image_size_is_refused(tmp_path):
    module = _constant_png_module()
    contract = contracts.contract_for("fast_style_x")
    saved_model.save(module, tmp_path / "model", {"stylize": module.stylize},
                     contract=contract, limits=contract.limits, model_name="fast_style_x")
    outcome = validate(str(tmp_path / "model"), "fast_style_x", str(tmp_path / "out"))
    assert not outcome.blessed
    height = serving_validation.PICTURE_HEIGHT
    assert f"failed stylize: image_bytes[0] is 8x8, the input asks for {height}x" in (
        outcome.message)
    assert outcome.properties["failed_signatures"] == "stylize"


def test_a_model_without_a_sidecar_is_refused_before_any_replay(tmp_path):
    module = _constant_png_module()
    tf.saved_model.save(module, str(tmp_path), signatures={"stylize": module.stylize})
    outcome = validate(str(tmp_path), "fast_style_x", str(tmp_path / "out"))
    assert not outcome.blessed and "failed requests" in outcome.message
    assert "genpipe_contract.json" in outcome.message


# -- requests and checks, without a model ----------------------------------------------------


def _sidecar(contract: contracts.Contract) -> dict:
    """A sidecar like an export's, with every optional signature."""
    limits = {name: 64 if value is None else value for name, value in contract.limits.items()}
    info = {"latent_dim": 2, "image_shape": [28, 28, 1], "labels": [0, 3, 7],
            "cache": {"layers": 1, "heads": 2, "head_dim": 8}}
    return {"model": contract.model, "signatures": contract.signature_keys(), "limits": limits,
            "info": info}


@pytest.mark.parametrize("name", ["text_lm", "vae", "gan", "deepdream", "style_transfer",
                                  "fast_style_x"])
def test_every_signature_key_gets_a_request_of_its_contract(name):
    contract = contracts.contract_for(name)
    sidecar = _sidecar(contract)
    probes = build_probes(contract, sidecar)
    assert [p.key for p in probes] == contract.signature_keys()
    for probe in probes:
        for tensor in probe.signature.inputs:
            value = probe.inputs[tensor.name]
            assert value.shape[0] == serving_validation.BATCH
            assert value.ndim == len(tensor.shape), (probe.key, tensor.name)
            if tensor.dtype != "string":
                assert value.dtype == np.dtype(tensor.dtype), (probe.key, tensor.name)
                low, high = tensor.bounds(sidecar["limits"])
                assert high is None or (value <= high).all(), (probe.key, tensor.name)
                assert low is None or (value >= low).all(), (probe.key, tensor.name)


def test_optional_signatures_are_probed_only_when_exported():
    contract = contracts.contract_for("vae")
    sidecar = _sidecar(contract)
    sidecar["signatures"] = contract.signature_keys(with_optional=False)
    assert "edit" not in [p.key for p in build_probes(contract, sidecar)]
    edit = build_probes(contract, _sidecar(contract))[-1]
    assert edit.key == "edit"
    assert edit.inputs["from_label"].tolist() == [0, 0] and edit.inputs["to_label"][0] == 7
    assert edit.inputs["images"].shape == (2, 28, 28, 1)


def test_transfer_must_answer_the_asked_height_with_the_content_aspect():
    contract = contracts.contract_for("style_transfer")
    (probe,) = build_probes(contract, _sidecar(contract))
    height = serving_validation.VALUES["height"]
    assert probe.image_size[0] == height and probe.image_size[1] > height  # a landscape photo


def _response(outputs: dict) -> object:
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response


def test_response_checks_name_the_output_and_the_problem():
    contract = contracts.contract_for("text_lm")
    probe = Probe("score", contract.signature("score"), {})
    good = {
        "log_likelihood": np.array([-3.0, -2.0], np.float32),
        "num_tokens": np.array([4, 4], np.int32),
        "perplexity": np.array([2.0, 1.5], np.float32),
    }
    assert check_response(probe, _response(good)) == []
    nan = {**good, "perplexity": np.array([1.0, np.nan], np.float32)}
    assert check_response(probe, _response(nan)) == ["perplexity is not finite"]
    assert check_response(probe, _response({**good, "num_tokens": np.array([4, 4])})) == [
        "num_tokens is int64, the contract says int32"]
    missing = {k: v for k, v in good.items() if k != "log_likelihood"}
    assert check_response(probe, _response(missing)) == ["output log_likelihood is missing"]
    short = {k: v[:1] for k, v in good.items()}
    assert "led by the batch of 2" in check_response(probe, _response(short))[0]
    generate = Probe("generate", contract.signature("generate"), {})
    texts = {
        "text": np.array([b"a b", b""], object),
        "continuation": np.array([b"b", b"c"], object),
        "token_ids": np.zeros((2, 1), np.int32),
        "num_tokens": np.ones(2, np.int32),
    }
    assert check_response(generate, _response(texts)) == ["text has an empty text"]
    gan = contracts.contract_for("gan")
    decode = Probe("decode", gan.signature("decode"), {})
    images = {"images": np.zeros((2, 4, 4, 1), np.uint8),
              "png_bytes": np.array([b"x", b"y"], object)}
    assert check_response(decode, _response(images))[0] == "png_bytes[0] is not a PNG"


def test_the_replay_process_imports_no_project_code():
    tree = ast.parse(inspect.getsource(serving_replay))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "json", "sys", "time", "typing", "tensorflow",
                        "tensorflow_serving", "numpy"}


def _push(tmp_path: Path, infra_blessed: int) -> tuple[object, Path]:
    """AtomicPushExecutor on a fake model with a blessed ModelBlessing and an InfraBlessing
    holding a warmup file; (the PushedModel, the serving folder)."""
    from tfx import v1 as tfx
    from tfx.types import standard_artifacts
    from tfx.utils import path_utils, proto_utils

    from components.push import AtomicPushExecutor

    def artifact(kind, name: str, blessed: int | None = None):
        made = kind()
        made.uri = str(tmp_path / name)
        Path(made.uri).mkdir(parents=True, exist_ok=True)
        if blessed is not None:
            made.set_int_custom_property("blessed", blessed)
        return made

    model = artifact(standard_artifacts.Model, "model")
    saved = Path(path_utils.serving_model_path(model.uri))
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"graph")
    (saved / "variables" / "variables.index").write_bytes(b"index")
    infra = artifact(standard_artifacts.InfraBlessing, "infra", infra_blessed)
    (Path(infra.uri) / WARMUP_FILE).write_bytes(b"requests")
    pushed = artifact(standard_artifacts.PushedModel, "pushed")
    destination = tfx.proto.PushDestination(
        filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(tmp_path / "serving")))
    AtomicPushExecutor().Do(
        {"model": [model], "model_blessing": [artifact(standard_artifacts.ModelBlessing, "mb", 1)],
         "infra_blessing": [infra]},
        {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(destination)},
    )
    return pushed, tmp_path / "serving"


def test_the_pusher_puts_the_warmup_file_in_before_saved_model_pb(tmp_path, monkeypatch):
    from components import push

    copied, copy = [], push.io_utils.copy_file

    def recorded(src: str, dst: str, **options) -> None:
        copied.append(Path(dst).relative_to(tmp_path).parts[1:])
        copy(src, dst, **options)

    monkeypatch.setattr(push.io_utils, "copy_file", recorded)
    pushed, serving = _push(tmp_path, infra_blessed=1)
    assert pushed.get_int_custom_property("pushed") == 1
    version = serving / pushed.get_string_custom_property("pushed_version")
    assert (version / WARMUP_PATH).read_bytes() == b"requests"
    published = [path for path in copied if path[0].startswith(".")]  # the staging folder
    assert published[-1][-1] == "saved_model.pb" and published[-2][-1] != "saved_model.pb"
    assert ("assets.extra", WARMUP_FILE) in [path[1:] for path in published]


def test_the_pusher_pushes_nothing_the_serving_validation_refused(tmp_path, capsys):
    pushed, serving = _push(tmp_path, infra_blessed=0)
    assert pushed.get_int_custom_property("pushed") == 0
    assert not serving.exists()
    assert "not pushed: infra_blessing not blessed" in capsys.readouterr().out


# -- the smoke pipelines ------------------------------------------------------------------------


def _smoke_runs(request) -> dict:
    """{model name: RunSummary} of every smoke pipeline (session fixtures)."""
    dream_style = request.getfixturevalue("dream_style_smoke_root").summaries
    return {
        "text_lm": request.getfixturevalue("text_smoke_run").first,
        "vae": request.getfixturevalue("vae_smoke_run").first,
        "gan": request.getfixturevalue("gan_smoke_run").first,
        "deepdream": dream_style["deepdream-smoke"],
        "style_transfer": dream_style["style-transfer-smoke"],
        "fast_style_scream": request.getfixturevalue(
            "fast_style_smoke_root").summaries["fast-style-scream-smoke"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["text_lm", "vae", "gan", "deepdream", "style_transfer",
                                        "fast_style_scream"])
def test_smoke_pipelines_push_their_validated_warmup_requests(request, model_name):
    summary = _smoke_runs(request)[model_name]
    blessing = summary.output("ServingValidator", "blessing")
    properties = blessing.properties
    assert properties["blessed"] == 1, properties["blessing_message"]
    producer = "Trainer" if "Trainer" in summary.components else "ExportPretrainedModel"
    assert properties["current_model_id"] == summary.output(producer, "model").id
    pushed = summary.output("Pusher", "pushed_model").properties
    assert pushed["pushed"] == 1
    version = Path(pushed["pushed_destination"])
    warmup = version / WARMUP_PATH
    assert warmup.read_bytes() == (Path(blessing.uri) / WARMUP_FILE).read_bytes()
    requests = [log.predict_log.request for log in read_prediction_logs(str(warmup))]
    keys = [r.model_spec.signature_name for r in requests]
    assert sorted(keys) == contracts.read_sidecar(version)["signatures"]  # one per key
    assert len(keys) == properties["warmup_requests"]
    assert {r.model_spec.name for r in requests} == {model_name}
    print(f"\n{model_name}: serving validation {properties['validation_seconds']:.1f} s "
          f"(load {properties['load_seconds']:.2f} s): {properties['blessing_message']}")
