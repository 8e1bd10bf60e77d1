"""The smoke text pipeline's pushed model, served and asked for generations over gRPC and REST
with TF Serving's official stubs, and the MLOps view of it (`genpipe status`)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from pipeline import cli
from pipeline.status import model_status
from serving.server import ModelServer, ServerOptions, build_manager


@pytest.fixture(scope="module")
def served(text_smoke_run):
    """A model server on the smoke run's serving folder (in process, free ports)."""
    server = ModelServer(
        build_manager(models_root=str(text_smoke_run.root / "serving")),
        ServerOptions(port=0, rest_api_port=_free_port(), workers=4),
    )
    server.start()
    yield server
    server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def stub(served):
    channel = grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def _generate(stub, prompts, seed, temperature):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "text_lm"
    request.model_spec.signature_name = "generate"
    n = len(prompts)
    columns = {
        "prompt": np.array(prompts, dtype=object),
        "max_tokens": np.full(n, 8, np.int32),
        "temperature": np.full(n, temperature, np.float32),
        "top_k": np.zeros(n, np.int32),
        "top_p": np.ones(n, np.float32),
        "seed": np.full(n, seed, np.int64),
    }
    for name, value in columns.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = stub.Predict(request, timeout=60)
    texts = tf.make_ndarray(response.outputs["text"]).tolist()
    return [t.decode() for t in texts], response.model_spec.version.value


def test_pushed_text_model_generates_over_grpc(stub, text_smoke_run):
    texts, version = _generate(stub, ["this movie", "the plot"], seed=3, temperature=0.8)
    assert texts[0].startswith("this movie") and texts[1].startswith("the plot")
    assert all(len(t.split()) > 2 for t in texts)
    again, _ = _generate(stub, ["this movie", "the plot"], seed=3, temperature=0.8)
    assert again == texts
    pushed = sorted(
        int(p.name)
        for p in (text_smoke_run.root / "serving" / "text_lm").iterdir()
        if p.name.isdigit()
    )
    assert version == pushed[-1]


def test_pushed_text_model_answers_rest_and_rejects_bad_temperature(served):
    url = f"http://127.0.0.1:{served.rest_port}/v1/models/text_lm:predict"
    good = {"signature_name": "score", "instances": [{"text": "this movie was good"}]}
    response = requests.post(url, json=good, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["perplexity"] > 1.0
    bad = {
        "signature_name": "generate",
        "instances": [
            {
                "prompt": "this movie",
                "max_tokens": 5,
                "temperature": -1.0,
                "top_k": 0,
                "top_p": 1.0,
                "seed": 1,
            }
        ],
    }
    response = requests.post(url, json=bad, timeout=60)
    assert response.status_code == 400
    assert "temperature" in response.json()["error"]


def test_status_lists_versions_with_metrics_lineage_and_live_state(served, text_smoke_run, capsys):
    statuses = [
        s
        for s in model_status(str(text_smoke_run.root), f"127.0.0.1:{served.grpc_port}")
        if s.model == "text_lm"
    ]
    assert statuses, "no text_lm version found"
    newest = statuses[0]
    assert newest.live and newest.on_disk
    assert newest.pipeline == "text-lm-smoke"
    assert newest.metrics["perplexity"] < newest.metrics["unigram_perplexity"]
    assert newest.trained_on.endswith("from offline")
    assert (
        cli.main(
            [
                "status",
                "--root",
                str(text_smoke_run.root),
                "--server",
                f"127.0.0.1:{served.grpc_port}",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "text_lm" in table and "LIVE" in table and "perplexity=" in table


def test_status_of_an_empty_root_says_how_to_fill_it(tmp_path, capsys):
    assert cli.main(["status", "--root", str(tmp_path)]) == 0
    assert "genpipe run MODEL" in capsys.readouterr().out
