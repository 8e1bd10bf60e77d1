"""Every model the smoke pipelines push runs on TensorFlow Serving's own loading path.

TF Serving imports the `serve` MetaGraphDef into a Session, restores variables through
`saver_def`, runs the init op and feeds the SignatureDef's tensor names. TensorFlow's
`saved_model_cli run` takes the same path in a process that imports no genpipe code, so each
signature of each pushed version is run with it, on the requests of the version's own warmup
file (`assets.extra/tf_serving_warmup_requests`, the requests TF Serving replays on load).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import contracts

SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MODELS = ("text_lm", "vae", "gan", "deepdream", "style_transfer", "fast_style")


def _latest_version(base: Path) -> Path:
    versions = sorted((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert versions, f"nothing pushed under {base}"
    return versions[-1]


@pytest.fixture(scope="module")
def pushed(
    text_smoke_run, vae_smoke_run, gan_smoke_run, dream_style_smoke_root, fast_style_smoke_root
) -> dict[str, Path]:
    """The latest pushed version folder of every model, by contract name."""
    serving = {
        "text_lm": text_smoke_run.root / "serving" / "text_lm",
        "vae": Path(vae_smoke_run.serving_dir),
        "gan": Path(gan_smoke_run.serving_dir),
        "deepdream": dream_style_smoke_root.serving_dir("deepdream"),
        "style_transfer": dream_style_smoke_root.serving_dir("style_transfer"),
    }
    fast = sorted((fast_style_smoke_root.root / "serving").glob(contracts.fast_style.PREFIX + "*"))
    assert fast, "the fast-style smoke run pushed nothing"
    serving["fast_style"] = fast[0]
    return {name: _latest_version(base) for name, base in serving.items()}


def warmup_requests(version: Path) -> dict[str, dict[str, np.ndarray]]:
    """{signature key: inputs} of the version's warmup file."""
    found = {}
    for record in tf.data.TFRecordDataset(str(version / WARMUP_FILE)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        found[request.model_spec.signature_name] = {
            name: tf.make_ndarray(proto) for name, proto in request.inputs.items()
        }
    return found


# What `saved_model_cli run` does after parsing its flags (the same two functions of
# tensorflow/python/tools/saved_model_cli.py: the inputs from .npz files, then the signature run
# in a Session of the `serve` MetaGraphDef), for every signature of every model in one process:
# starting TensorFlow once instead of once per model saves about a minute of the suite.
SAVED_MODEL_CLI_RUNS = """
import json, sys
from tensorflow.python.tools import saved_model_cli as cli
for version, key, inputs, outdir in json.loads(sys.argv[1]):
    feed = cli.load_inputs_from_input_arg_string(inputs, "", "")
    cli.run_saved_model_with_feed_dict(version, "serve", key, feed, outdir, True)
"""


def saved_model_cli_runs(jobs: dict[str, tuple[Path, dict[str, dict]]], scratch: Path) -> dict:
    """{name: {signature key: outputs}} of saved_model_cli's run on each signature of each
    `jobs[name] = (version folder, {signature key: inputs})` (inputs passed in .npz files)."""
    runs = []
    for name, (version, requests_by_key) in jobs.items():
        for key, inputs in requests_by_key.items():
            folder = scratch / name / key
            folder.mkdir(parents=True)
            feed = folder / "inputs.npz"
            np.savez(feed, **inputs)
            names = ";".join(f"{tensor}={feed}[{tensor}]" for tensor in inputs)
            runs.append((str(version), key, names, str(folder / "outputs")))
    command = [sys.executable, "-c", SAVED_MODEL_CLI_RUNS, json.dumps(runs)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, f"saved_model_cli run: {done.stderr[-3000:]}"
    return {name: {key: {path.stem: np.load(path, allow_pickle=True)
                         for path in (scratch / name / key / "outputs").glob("*.npy")}
                   for key in requests_by_key}
            for name, (_, requests_by_key) in jobs.items()}


@pytest.fixture(scope="module")
def cli_outputs(pushed, tmp_path_factory) -> dict[str, dict]:
    """saved_model_cli's outputs for every signature of every pushed model (one process)."""
    jobs = {model: (pushed[model], warmup_requests(pushed[model])) for model in MODELS}
    return saved_model_cli_runs(jobs, tmp_path_factory.mktemp("saved_model_cli"))


@pytest.mark.parametrize("model", MODELS)
def test_every_signature_runs_in_saved_model_cli(model, pushed, cli_outputs):
    version = pushed[model]
    contract = contracts.contract_for(model if model != "fast_style" else version.parent.name)
    sidecar = contracts.read_sidecar(version)
    requests_by_key = warmup_requests(version)
    assert sorted(requests_by_key) == sorted(sidecar["signatures"])
    assert set(contract.signature_keys(with_optional=False)) <= set(requests_by_key)
    outputs_by_key = cli_outputs[model]
    for key, inputs in requests_by_key.items():
        outputs = outputs_by_key[key]
        signature = contract.signature(key)
        assert sorted(outputs) == sorted(t.name for t in signature.outputs), key
        batch = len(next(iter(inputs.values())))
        for tensor in signature.outputs:
            value = outputs[tensor.name]
            assert value.shape[0] == batch, (key, tensor.name, value.shape)
            if tensor.is_bytes:
                image = tf.io.decode_png(value[0]).numpy()
                assert image.size > 0 and image.std() > 0, (key, tensor.name)


def test_the_saved_model_cli_command_gives_what_its_functions_give(pushed, cli_outputs,
                                                                   tmp_path):
    """The `saved_model_cli run` executable itself, on one signature, against the in-process
    runs above: the same outputs for the same seeded request."""
    version = pushed["gan"]
    inputs = warmup_requests(version)["generate"]
    feed = tmp_path / "generate.npz"
    np.savez(feed, **inputs)
    command = [
        str(SAVED_MODEL_CLI), "run", "--dir", str(version), "--tag_set", "serve",
        "--signature_def", "generate", "--outdir", str(tmp_path / "cli"), "--overwrite",
        "--inputs", ";".join(f"{name}={feed}[{name}]" for name in inputs),
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = cli_outputs["gan"]["generate"]
    assert expected
    for name, value in expected.items():
        cli_value = np.load(tmp_path / "cli" / f"{name}.npy", allow_pickle=True)  # bytes: objects
        np.testing.assert_array_equal(cli_value, value)


def test_rest_answers_png_outputs_as_b64_under_bytes_keys(pushed):
    """TF Serving's REST API base64-encodes string outputs whose alias ends in `_bytes`."""
    import base64

    from serving.server import ModelServer, ServerOptions, build_manager

    server = ModelServer(
        build_manager(models_root=str(pushed["gan"].parent.parent)),
        ServerOptions(port=0, rest_api_port=_free_port(), workers=2),
    )
    server.start()
    try:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/gan:predict"
        body = {"signature_name": "generate", "instances": [{"seed": 1}, {"seed": 2}]}
        answer = requests.post(url, json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == 2
        encoded = predictions[0]["png_bytes"]
        assert set(encoded) == {"b64"}
        image = tf.io.decode_png(base64.b64decode(encoded["b64"])).numpy()
        np.testing.assert_array_equal(image, np.asarray(predictions[0]["images"], np.uint8))
    finally:
        server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_expired_deadline_stops_a_dream_and_frees_the_cpu(pushed):
    """gRPC deadlines reach the Session run: the dream stops, DEADLINE_EXCEEDED, CPU idle."""
    import time

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.server import ModelServer, ServerOptions, build_manager
    from sources.photos import photo

    server = ModelServer(
        build_manager(models_root=str(pushed["deepdream"].parent.parent)),
        ServerOptions(port=0, rest_api_port=0, workers=2),
    )
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        limits = contracts.read_sidecar(pushed["deepdream"])["limits"]
        side = int(limits["max_pixels"] ** 0.5)
        image = tf.image.resize(photo("chelsea"), (side, side))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "deepdream"
        request.model_spec.signature_name = "dream"
        dream = contracts.deepdream.DREAM
        values = {
            **dream.defaults(),
            "image": tf.io.encode_png(tf.cast(image, tf.uint8)).numpy(),
            "iterations": limits["max_iterations"],
            "octaves": dream.input("octaves").high,
            "octave_scale": dream.input("octave_scale").low,
            "max_loss": 0.0,  # never stop early
        }
        for tensor in dream.inputs:
            array = np.array(
                [values[tensor.name]],
                dtype=object
                if tensor.dtype == "string"
                else tf.as_dtype(tensor.dtype).as_numpy_dtype,
            )
            request.inputs[tensor.name].CopyFrom(tf.make_tensor_proto(array))
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failure:
            stub.Predict(request, timeout=1.0)
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)  # the server's own answer lands after the client gives up
        cpu_before = time.process_time()
        time.sleep(1.0)
        idle_cpu = time.process_time() - cpu_before
        assert idle_cpu < 0.3, f"the server kept computing: {idle_cpu:.2f} CPU-s in 1 s"
        assert time.monotonic() - started < 10
    finally:
        channel.close()
        server.stop()
