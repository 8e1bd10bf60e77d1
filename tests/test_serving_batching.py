"""Request batching (`--enable_batching`): the parameters file, merged runs that answer every
caller exactly as a run of its own would, padding, full queues, deadlines in the queue, and a
batching server answering concurrent gRPC `generate` calls of a tiny text LM."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import numpy as np
import pytest
import requests as http
import tensorflow as tf
import toy_models
from tensorflow_serving.apis import prediction_service_pb2_grpc
from test_serving import free_port, outputs, predict_request

from serving.batching import (
    BatchingParameters,
    BatchScheduler,
    merge,
    read_batching_parameters,
    split,
)
from serving.errors import ServingError
from serving.metrics import ServingMetrics
from serving.predict import run_signature
from serving.servable import load_servable
from serving.server import ModelServer, ServerOptions, build_manager

SECOND = 1_000_000  # micros


class SeededToy(tf.Module):
    """Per-row seeded samples, the batch size the graph saw, and a loop of max(spin) steps."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="seed"),
            tf.TensorSpec([None], tf.int64, name="spin"),
        ]
    )
    def sample(self, seed, spin):
        check = tf.debugging.assert_non_negative(seed, message="seed: must be >= 0")
        with tf.control_dependencies([check]):
            steps = tf.reduce_max(spin)
        count, _ = tf.while_loop(
            lambda i, total: i < steps,
            lambda i, total: (i + 1, total + i % 3),
            (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
        )
        z = tf.map_fn(
            lambda s: tf.random.stateless_normal([4], tf.stack([s, tf.constant(0, tf.int64)])),
            seed,
            fn_output_signature=tf.float32,
        )
        rows = tf.shape(seed)[0]
        return {"z": z, "batch": tf.fill([rows], rows), "spun": tf.fill([rows], count)}

    def signatures(self) -> dict:
        return {"serving_default": self.sample}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    export = toy_models.save(SeededToy(), tmp_path_factory.mktemp("toy") / "export")
    servable = load_servable("toy", 1, str(export))
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def slow_spin(toy) -> int:
    """Loop steps that keep a run busy for about 0.8 s on this machine."""
    steps = 200_000
    toy.run("", request(0))  # the first run pays one-time costs
    begin = time.perf_counter()
    toy.run("", request(0, spin=steps))
    return int(steps * 0.8 / (time.perf_counter() - begin))


def request(*seeds: int, spin: int = 0) -> dict[str, np.ndarray]:
    return {"seed": np.int64(seeds), "spin": np.full(len(seeds), spin, np.int64)}


def concurrently(calls: list[Callable[[], object]], stagger: float = 0.0) -> list:
    """Start every call on its own thread (``stagger`` s apart); results or exceptions."""
    results: list = [None] * len(calls)

    def target(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as error:  # noqa: BLE001 - handed to the test
            results[index] = error

    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
        time.sleep(stagger)
    for thread in threads:
        thread.join(timeout=60)
    return results


def scheduler(**parameters) -> tuple[BatchScheduler, ServingMetrics]:
    metrics = ServingMetrics()
    return BatchScheduler(BatchingParameters(**parameters), metrics.batching), metrics


def batch_sizes(metrics: ServingMetrics, model: str, signature: str) -> tuple[float, float]:
    """(runs, rows) recorded by genpipe_serving_batch_size."""
    labels = {"model": model, "signature": signature}
    get = metrics.registry.get_sample_value
    return get("genpipe_serving_batch_size_count", labels), get(
        "genpipe_serving_batch_size_sum", labels
    )


# -- the parameters file -----------------------------------------------------------------------


def test_parameters_file_and_tf_serving_defaults(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text(
        "# TF Serving's text format\n"
        "max_batch_size { value: 8 }\n"
        "batch_timeout_micros { value: 2000 }\n"
        "max_enqueued_batches { value: 3 }\n"
        "num_batch_threads { value: 1 }\n"
        "allowed_batch_sizes: 2 allowed_batch_sizes: 4 allowed_batch_sizes: 8\n"
        "pad_variable_length_inputs: true\n"
        'thread_pool_name { value: "batch_threads" }\n'
    )
    assert read_batching_parameters(str(path)) == BatchingParameters(8, 2000, 3, 1, (2, 4, 8), True)
    path.write_text("")
    defaults = read_batching_parameters(str(path))
    assert (defaults.max_batch_size, defaults.batch_timeout_micros) == (1000, 0)
    assert defaults.max_enqueued_batches == 10 and defaults.allowed_batch_sizes == ()
    assert defaults.num_batch_threads >= 1 and not defaults.pad_variable_length_inputs
    assert read_batching_parameters(None) == defaults


BAD_FILES = {
    "unknown field": ("max_batch_sise { value: 8 }", "max_batch_sise"),
    "zero max_batch_size": ("max_batch_size { value: 0 }", "max_batch_size"),
    "negative timeout": ("batch_timeout_micros { value: -1 }", "batch_timeout_micros"),
    "zero max_enqueued_batches": ("max_enqueued_batches { value: 0 }", "max_enqueued_batches"),
    "zero threads": ("num_batch_threads { value: 0 }", "num_batch_threads"),
    "sizes not increasing": (
        "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 4 "
        "allowed_batch_sizes: 8",
        "allowed_batch_sizes",
    ),
    "last size not max_batch_size": (
        "max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
        "allowed_batch_sizes",
    ),
    "last size not the default max": ("allowed_batch_sizes: 64", "max_batch_size"),
    "non-positive size": (
        "max_batch_size { value: 8 } allowed_batch_sizes: 0 allowed_batch_sizes: 8",
        "allowed_batch_sizes",
    ),
    "scalar instead of wrapper": ("max_batch_size: 8", "max_batch_size"),
    "large batch splitting": (
        "enable_large_batch_splitting { value: true }",
        "enable_large_batch_splitting",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_parameters_are_refused_naming_the_field(tmp_path, case):
    text, field = BAD_FILES[case]
    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(ServingError) as caught:
        read_batching_parameters(str(path))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.message and str(path) in caught.value.message


def test_server_refuses_a_bad_file_at_startup(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: -4 }")
    (tmp_path / "models").mkdir()
    options = ServerOptions(enable_batching=True, batching_parameters_file=str(path))
    with pytest.raises(ServingError, match="max_batch_size"):
        ModelServer(build_manager(models_root=str(tmp_path / "models")), options)


# -- merging -----------------------------------------------------------------------------------


def test_merged_requests_get_what_they_would_alone(toy):
    batcher, metrics = scheduler(max_batch_size=8, batch_timeout_micros=5 * SECOND)
    seeds = [(1,), (2, 3), (4,), (5,), (6, 7, 8)]  # 8 rows: the batch runs when full
    answers = concurrently([lambda s=s: batcher.run(toy, "", request(*s)) for s in seeds])
    for seed, answer in zip(seeds, answers, strict=True):
        alone = toy.run("", request(*seed))
        np.testing.assert_array_equal(answer["z"], alone["z"])
        assert answer["batch"].tolist() == [8] * len(seed)  # the graph saw one batch of 8
    assert batch_sizes(metrics, "toy", "serving_default") == (1, 8)
    assert batcher.queue_count() == 0  # nothing stays behind


def test_padding_to_an_allowed_size_is_dropped_from_the_outputs(toy):
    batcher, metrics = scheduler(max_batch_size=8, allowed_batch_sizes=(4, 8))
    answer = batcher.run(toy, "", request(11, 12, 13))
    assert answer["batch"].tolist() == [4, 4, 4]  # ran as 4 rows, answered with 3
    np.testing.assert_array_equal(answer["z"], toy.run("", request(11, 12, 13))["z"])
    assert batch_sizes(metrics, "toy", "serving_default") == (1, 3)  # rows before padding


def test_merge_pads_like_tf_serving_and_split_needs_batch_major_outputs():
    parts = [{"x": np.int32([[1, 2]])}, {"x": np.int32([[3, 4, 5], [6, 7, 8]])}]
    merged = merge(parts, 4, pad=True)["x"]  # first element as padding, last row repeated
    assert merged.tolist() == [[1, 2, 1], [3, 4, 5], [6, 7, 8], [6, 7, 8]]
    rows = split({"y": np.arange(4), "z": np.ones((4, 2))}, [1, 2], 4)
    assert [part["y"].tolist() for part in rows] == [[0], [1, 2]]
    assert split({"y": np.arange(4), "total": np.float32(3)}, [1, 2], 4) is None


def test_requests_with_an_output_filter_get_their_own_batches(toy):
    batcher, _ = scheduler(max_batch_size=2, batch_timeout_micros=5 * SECOND)
    calls = [
        lambda: batcher.run(toy, "", request(1), ["z"]),
        lambda: batcher.run(toy, "", request(2)),
        lambda: batcher.run(toy, "", request(3), ["z"]),
        lambda: batcher.run(toy, "", request(4)),
    ]
    filtered, full, filtered_too, full_too = concurrently(calls)
    assert list(filtered) == ["z"] and list(filtered_too) == ["z"]
    assert full["batch"].tolist() == [2] and full_too["batch"].tolist() == [2]
    np.testing.assert_array_equal(filtered["z"], toy.run("", request(1))["z"])


def test_one_bad_row_fails_only_its_request(toy):
    batcher, metrics = scheduler(max_batch_size=8, batch_timeout_micros=SECOND // 2)
    seeds = [21, -1, 22, 23]
    answers = concurrently([lambda s=s: batcher.run(toy, "", request(s)) for s in seeds])
    assert isinstance(answers[1], tf.errors.InvalidArgumentError)
    assert "seed: must be >= 0" in answers[1].message
    for seed, answer in zip(seeds, answers, strict=True):
        if seed >= 0:
            np.testing.assert_array_equal(answer["z"], toy.run("", request(seed))["z"])
    runs, rows = batch_sizes(metrics, "toy", "serving_default")
    assert rows / runs > 1  # merged first, then each re-run alone


# -- the queue limits --------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_full_queue_answers_unavailable_at_once(toy, slow_spin):
    batcher, _ = scheduler(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    results: list = []

    def call(spin: int) -> None:
        results.append(batcher.run(toy, "", request(1, spin=spin)))

    threads = [threading.Thread(target=call, args=(spin,)) for spin in (slow_spin, 0)]
    threads[0].start()
    wait_for(lambda: batcher.running == 1, "the slow run")
    threads[1].start()
    wait_for(lambda: batcher.queue_count(toy) == 1, "a queued batch")
    began = time.monotonic()
    with pytest.raises(ServingError) as caught:
        batcher.run(toy, "", request(2))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "max_enqueued_batches" in caught.value.message
    assert time.monotonic() - began < 0.2
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 2  # the running and the queued request still answer


def test_deadline_passing_in_the_queue_answers_deadline_exceeded(toy, slow_spin):
    batcher, _ = scheduler(max_batch_size=1, num_batch_threads=1)
    slow = threading.Thread(target=lambda: batcher.run(toy, "", request(1, spin=slow_spin)))
    slow.start()
    wait_for(lambda: batcher.running == 1, "the slow run")
    began = time.monotonic()
    with pytest.raises(tf.errors.DeadlineExceededError, match="batching queue"):
        batcher.run(toy, "", request(2), deadline=time.monotonic() + 0.15)
    assert 0.1 < time.monotonic() - began < 0.5  # at its deadline, not after the slow run
    slow.join(timeout=30)
    assert batcher.queue_count() == 0
    with pytest.raises(ServingError) as caught:  # through run_signature: the canonical code
        run_signature(toy, "", request(3), deadline=time.monotonic() - 1, batching=batcher)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_request_larger_than_max_batch_size_is_refused(toy):
    batcher, _ = scheduler(max_batch_size=2)
    with pytest.raises(ServingError) as caught:
        batcher.run(toy, "", request(1, 2, 3))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_batch_size" in caught.value.message


# -- a batching server -------------------------------------------------------------------------

PROMPTS = ["this movie was", "the film is", "a story about", "this film was"] * 2


@pytest.fixture(scope="module")
def text_lm_root(tmp_path_factory):
    """A tiny untrained text LM export (randomness is per row, keyed by each row's seed)."""
    from models.text.export import export_text_lm
    from models.text.lm import build_lm
    from models.text.standardize import vocabulary_with_specials

    tf.keras.utils.set_random_seed(0)
    words = sorted({word for prompt in PROMPTS for word in prompt.split()} | {"good", "bad"})
    vocabulary = vocabulary_with_specials(words + [f"w{i}" for i in range(40)])
    model = build_lm(len(vocabulary), 16, 16, 32, 2)
    root = tmp_path_factory.mktemp("models")
    export_text_lm(model, vocabulary, str(root / "text_lm" / "1"), max_new_tokens=8)
    return root


def test_batching_server_answers_concurrent_generate_calls_as_alone(text_lm_root, tmp_path):
    parameters = tmp_path / "batching.config"
    parameters.write_text(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 300000 } "
        "num_batch_threads { value: 1 }"
    )
    options = ServerOptions(
        port=0,
        rest_api_port=free_port(),
        enable_batching=True,
        batching_parameters_file=str(parameters),
    )
    server = ModelServer(build_manager(models_root=str(text_lm_root), poll_wait_seconds=0), options)
    server.start()
    try:
        requests = [
            {
                "prompt": np.array([prompt.encode()], dtype=object),
                "max_tokens": np.int32([8]),
                "temperature": np.float32([1.0]),
                "top_k": np.int32([0]),
                "top_p": np.float32([1.0]),
                "seed": np.int64([index]),
            }
            for index, prompt in enumerate(PROMPTS)
        ]
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            calls = [
                lambda r=r: outputs(
                    stub.Predict(predict_request("text_lm", r, "generate"), timeout=30)
                )
                for r in requests
            ]
            answers = concurrently(calls)
        with server.manager.servable("text_lm") as servable:
            for inputs, answer in zip(requests, answers, strict=True):
                assert not isinstance(answer, Exception), answer
                alone = run_signature(servable, "generate", inputs)  # no batching
                assert answer["text"].tolist() == alone["text"].tolist()
                np.testing.assert_array_equal(answer["token_ids"], alone["token_ids"])
        runs, rows = batch_sizes(server.metrics, "text_lm", "generate")
        assert rows == len(PROMPTS) and runs < rows, (runs, rows)  # merged
        body = {
            "signature_name": "generate",
            "inputs": {k: v.tolist() for k, v in requests[0].items()},
        }
        body["inputs"]["prompt"] = [PROMPTS[0]]
        reply = http.post(
            f"http://127.0.0.1:{server.rest_port}/v1/models/text_lm:predict", json=body, timeout=30
        )
        assert reply.json()["outputs"]["text"] == [answers[0]["text"][0].decode()]  # REST too
        assert server.batching.queue_count() == 0
    finally:
        server.stop()
