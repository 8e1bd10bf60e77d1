"""Streaming generation: text_lm's `generate_start`/`generate_step` signatures chained by Predict
calls and by the server's GenerateStream RPC (protos/generation.py), both giving exactly
`generate`'s continuation, on a tiny text LM exported and served the real way."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from test_serving_client import STAND_INS, export_stand_in, free_port, text_generate

from client import ModelServerClient, ModelServerError, StreamedWord
from client import cli as client_cli
from client.inputs import signature_inputs
from contracts import text_lm
from protos.generation import GENERATE_STREAM, generate_stream_stub
from serving.errors import ServingError
from serving.generation import generate_stream
from serving.grpc_service import PredictionService
from serving.server import ModelServer, ServerOptions, build_manager

MAX_NEW_TOKENS = 8
PROMPTS = ["this movie was", "a story about the film is"]  # 3 and 6 words
OLD = "old_lm"  # a text_lm exported before the word-by-word signatures
TOKEN = "s3cret"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny untrained text LM (randomness keyed by each row's seed) and an old export."""
    from models.text.export import export_text_lm
    from models.text.lm import build_lm
    from models.text.standardize import vocabulary_with_specials

    tf.keras.utils.set_random_seed(0)
    words = sorted({word for prompt in PROMPTS for word in prompt.split()} | {"good", "bad"})
    vocabulary = vocabulary_with_specials(words + [f"w{i}" for i in range(40)])
    model = build_lm(len(vocabulary), 16, 16, 32, 2)
    root = tmp_path_factory.mktemp("models")
    export = str(root / text_lm.MODEL / "1")
    export_text_lm(model, vocabulary, export, max_new_tokens=MAX_NEW_TOKENS)
    _, _, limits = STAND_INS[text_lm.MODEL]
    export_stand_in(root / OLD / "1", text_lm.CONTRACT, {"generate": text_generate}, limits, OLD)
    return root


@pytest.fixture(scope="module")
def server(root):
    manager = build_manager(models_root=str(root), poll_wait_seconds=0)
    server = ModelServer(manager, ServerOptions(port=free_port(), rest_api_port=0))
    server.start()
    yield server
    server.stop(grace=1)


@pytest.fixture(scope="module")
def address(server):
    return f"127.0.0.1:{server.grpc_port}"


@pytest.fixture(scope="module")
def client(address):
    with ModelServerClient(address, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def predict_only(server):
    """A gRPC server with PredictionService only (on the same models), like the real TF
    Serving: GenerateStream is UNIMPLEMENTED there."""
    plain = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(server.manager, server.metrics), plain
    )
    port = plain.add_insecure_port("127.0.0.1:0")
    plain.start()
    yield f"127.0.0.1:{port}"
    plain.stop(grace=1)


def rows_of(words: list[StreamedWord], count: int) -> list[list[StreamedWord]]:
    rows: list[list[StreamedWord]] = [[] for _ in range(count)]
    for word in words:
        rows[word.row].append(word)
    return rows


def assert_streams_generate(words: list[StreamedWord], expected) -> None:
    """Each row: indices 0, 1, ... in order, `last` on the last word only, and the words and
    token ids of `generate`."""
    for row, generation in zip(rows_of(words, len(expected)), expected, strict=True):
        assert [w.index for w in row] == list(range(len(row)))
        assert [w.last for w in row] == [False] * (len(row) - 1) + [True] * bool(row)
        assert " ".join(w.word for w in row) == generation.continuation
        assert [w.token_id for w in row] == generation.token_ids


SETTINGS = [
    dict(max_tokens=[5, 8], temperature=1.0, seed=[1, 2]),
    dict(max_tokens=[8, 3], temperature=0.7, top_k=5, seed=[7, 7]),
    dict(max_tokens=[0, 4], temperature=1.5, top_p=0.9, seed=[3, 9]),
    dict(max_tokens=[6, 6], temperature=0.0, seed=[0, 1]),  # greedy
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["t1", "top_k", "top_p_and_0_tokens", "greedy"])
@pytest.mark.parametrize("transport", ["stream", "predict"])
def test_streamed_words_are_generates_continuation(client, settings, transport):
    expected = client.generate_text(PROMPTS, **settings)
    words = list(client.generate_stream(PROMPTS, transport=transport, **settings))
    assert all(isinstance(word, StreamedWord) for word in words)
    assert_streams_generate(words, expected)


def stream_request(signature_name: str = "", **values) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = text_lm.MODEL
    request.model_spec.signature_name = signature_name
    values = {"prompt": PROMPTS, "max_tokens": MAX_NEW_TOKENS, **values}
    inputs = signature_inputs(text_lm.GENERATE, values)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_the_rpc_sends_each_step_as_it_comes_with_the_version(address):
    with grpc.insecure_channel(address) as channel:
        responses = list(
            generate_stream_stub(channel)(stream_request(max_tokens=[2, 5]), timeout=60)
        )
    assert GENERATE_STREAM == "/genpipe.serving.GenerationService/GenerateStream"
    # the first word alone (from generate_start), then the words of each generate_step call
    assert len(responses) >= 2 and len(responses[0].words) == 1
    for response in responses:
        assert response.words
        assert response.model_spec.name == text_lm.MODEL
        assert response.model_spec.version.value == 1
        assert response.model_spec.signature_name == text_lm.GENERATE.name
    assert sum(len(r.words) for r in responses) == 7


def test_auto_falls_back_to_predict_steps_where_the_rpc_is_unimplemented(client, predict_only):
    settings = dict(max_tokens=[4, 6], temperature=0.9, seed=[5, 6])
    expected = client.generate_text(PROMPTS, **settings)
    with ModelServerClient(predict_only, timeout=60) as plain:
        with pytest.raises(ModelServerError) as caught:
            list(plain.generate_stream(PROMPTS, transport="stream", **settings))
        assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED
        assert_streams_generate(list(plain.generate_stream(PROMPTS, **settings)), expected)
    with pytest.raises(
        ValueError, match=r"transport must be one of \['auto', 'stream', 'predict'\]"
    ):
        next(client.generate_stream("x", transport="rpc"))


def error_of(call) -> grpc.RpcError | ModelServerError:
    with pytest.raises((grpc.RpcError, ModelServerError)) as caught:
        call()
    return caught.value


def test_bad_stream_requests_name_the_field(client, address):
    too_hot = text_lm.LIMITS["max_temperature"] + 1  # a limit fixed at export: the graph says
    stream = client.generate_stream("x", max_tokens=2, temperature=too_hot)
    error = error_of(lambda: list(stream))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "temperature" in error.message
    with grpc.insecure_channel(address) as channel:
        stub = generate_stream_stub(channel)
        error = error_of(lambda: list(stub(stream_request("score"), timeout=30)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "model_spec.signature_name must be '' or 'generate'" in error.details()
        request = stream_request()
        del request.inputs["seed"]
        error = error_of(lambda: list(stub(request, timeout=30)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "['seed']" in error.details()
        request = stream_request()
        request.model_spec.name = OLD
        error = error_of(lambda: list(stub(request, timeout=30)))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"model {OLD} version 1" in error.details() and "re-export" in error.details()


def test_a_step_whose_cache_does_not_match_its_position_is_refused(client):
    inputs = signature_inputs(text_lm.GENERATE_START, {"prompt": PROMPTS, "max_tokens": 4})
    start = client.predict(text_lm.MODEL, inputs, signature=text_lm.GENERATE_START.name)
    step = {t.name: inputs[t.name] for t in text_lm.SETTINGS}
    step.update({t.name: start[t.name] for t in text_lm.STATE})
    step["keys"] = step["keys"][:, :, :, :-1]  # one position short
    step["steps"] = np.ones(len(PROMPTS), np.int32)
    error = error_of(
        lambda: client.predict(text_lm.MODEL, step, signature=text_lm.GENERATE_STEP.name)
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "keys" in error.message


def test_generate_text_stream_prints_the_same_text(address, capsys):
    argv = ["generate", "text", "this movie was", "--seed", "4", "--max-tokens", "6"]
    argv += ["--temperature", "0.8", "--server", address]
    assert client_cli.main(argv) == 0
    plain = capsys.readouterr().out
    assert client_cli.main([*argv, "--stream"]) == 0
    assert capsys.readouterr().out == plain
    assert client_cli.main([*argv, "--stream", "-n", "2"]) == 2
    assert "--stream prints one sample" in capsys.readouterr().err


def requests_total(server, status: str) -> float:
    labels = {
        "model": text_lm.MODEL,
        "version": "1",
        "signature": text_lm.GENERATE.name,
        "api": "GenerateStream",
        "protocol": "grpc",
        "status": status,
    }
    return server.metrics.registry.get_sample_value("genpipe_serving_requests_total", labels) or 0


def test_leaving_a_stream_early_cancels_it_and_the_server_keeps_serving(client, server):
    tokens = {"model": text_lm.MODEL, "version": "1", "signature": text_lm.GENERATE_STEP.name}
    get = server.metrics.registry.get_sample_value
    before = get("genpipe_serving_generated_tokens_total", tokens) or 0
    answered = requests_total(server, "OK") + requests_total(server, "CANCELLED")
    stream = client.generate_stream(PROMPTS, max_tokens=MAX_NEW_TOKENS, transport="stream")
    assert next(stream).index == 0
    stream.close()  # a tiny model may have finished already; a big one stops after its step
    deadline = time.monotonic() + 10
    while requests_total(server, "OK") + requests_total(server, "CANCELLED") == answered:
        assert time.monotonic() < deadline, "the left stream was never counted"
        time.sleep(0.05)
    words = list(client.generate_stream(PROMPTS, max_tokens=[3, 2], transport="stream"))
    assert len(words) == 5 and requests_total(server, "OK") >= answered + 1
    assert (get("genpipe_serving_generated_tokens_total", tokens) or 0) > before
    with server.manager.servable(text_lm.MODEL) as servable:
        assert servable.version == 1


def test_the_server_stops_when_the_client_left_or_the_deadline_passed(server):
    """What a call sees between two steps once the client cancelled (`context.is_active()`
    false), and at its deadline."""
    request = stream_request(max_tokens=[2, 5])
    responses = generate_stream(server.manager, request, is_active=lambda: False)
    assert next(responses).words
    with pytest.raises(ServingError) as caught:
        next(responses)
    assert caught.value.code == grpc.StatusCode.CANCELLED
    responses = generate_stream(server.manager, request, deadline=time.monotonic() - 1)
    with pytest.raises(ServingError) as caught:
        next(responses)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_deadline_and_bearer_token(root, address):
    with ModelServerClient(address, timeout=0.001) as hurried:
        stream = hurried.generate_stream(PROMPTS, max_tokens=2, transport="stream")
        error = error_of(lambda: list(stream))
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    manager = build_manager(models_root=str(root), poll_wait_seconds=0)
    guarded = ModelServer(manager, ServerOptions(port=free_port(), rest_api_port=0, token=TOKEN))
    guarded.start()
    try:
        where = f"127.0.0.1:{guarded.grpc_port}"
        with ModelServerClient(where, timeout=30) as anonymous:
            stream = anonymous.generate_stream("x", max_tokens=2, transport="stream")
            error = error_of(lambda: list(stream))
            assert error.code == grpc.StatusCode.UNAUTHENTICATED and "bearer" in error.message
            error = error_of(lambda: list(anonymous.generate_stream("x", max_tokens=2)))
            assert error.code == grpc.StatusCode.UNAUTHENTICATED
        with ModelServerClient(where, timeout=30, token=TOKEN) as trusted:
            assert len(list(trusted.generate_stream("x", max_tokens=2))) == 2
    finally:
        guarded.stop(grace=1)
