"""Load (issue 13): overload, version switches under mixed load, and a soak.

- Overload: a server with a low limit (--grpc_max_threads / --rest_api_num_threads 2,
  --max_enqueued_requests 2) flooded with many more concurrent calls of a slow signature
  answers every one OK or RESOURCE_EXHAUSTED (HTTP 429) within a bound, counts the refusals,
  and answers normally afterwards.
- Version switches: 8 clients (gRPC and REST) send 5,000 requests while 5 versions are pushed
  and a label moves twice; no request fails and every answer comes from a version that
  GetModelStatus showed AVAILABLE while the request was in flight.
- Soak: resident memory, threads and open file descriptors of the process (from /proc) before
  and after `GENPIPE_SOAK_REQUESTS` requests (1,000 in the suite; `make soak` sets 10,000).

Each test runs its own in-process server on the tiny toy models. Timings are printed and
measured in benchmarks/serving.py --load; the only time asserted is a generous bound that
tells a quick refusal from a hang.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import toy_models
from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2
from test_serving import free_port

from serving import cli, flags
from serving.admission import AdmissionGate
from serving.errors import ServingError
from serving.server import ModelServer, ServerOptions, build_manager

SUITE_SOAK_REQUESTS = 1_000  # `make soak` sets GENPIPE_SOAK_REQUESTS=10000 (the count)
SOAK_REQUESTS = int(os.environ.get("GENPIPE_SOAK_REQUESTS", SUITE_SOAK_REQUESTS))
MAX_RSS_GROWTH = 0.05  # the bound, after warm-up
LOAD_REQUESTS = 5_000
CLIENTS = 8  # half gRPC, half REST
VERSIONS = 6  # version 1, then 5 pushed under load
REFUSAL_SECONDS = 5.0  # a refused call answers within this (2 cores shared with other jobs)
ANSWER_SECONDS = 120.0  # any call of the overload test answers within this: never a hang
SPIN_STEPS = 50_000  # about 1 s of graph loop per overload request on a shared core
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    scratch = tmp_path_factory.mktemp("load-exports")
    saved = {"spin": toy_models.save(toy_models.SpinModel(), scratch / "spin")}
    for version in range(1, VERSIONS + 1):
        module = toy_models.CounterModel(version)
        saved[f"counter{version}"] = toy_models.save(module, scratch / f"counter{version}")
    return saved


def _server(options: ServerOptions, **manager) -> ModelServer:
    server = ModelServer(build_manager(**manager), options)
    server.start()
    return server


@functools.cache  # the clients send a few requests over and over: build each once
def _counter_request(x: float, label: str | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "counter"
    if label:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([x])))
    return request


def _grpc_counter(stub, x: float, label: str | None = None) -> int:
    """One gRPC Predict of `counter`: the version that answered (checked against its output)."""
    response = stub.Predict(_counter_request(x, label), timeout=30)
    version = response.model_spec.version.value
    assert tf.make_ndarray(response.outputs["version"]).tolist() == [version]
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [x + version]
    return version


def _rest_counter(session: requests.Session, rest: str, x: float, label: str | None = None) -> int:
    """One REST predict of `counter`: the version that answered (from its output)."""
    where = f"/labels/{label}" if label else ""
    reply = session.post(f"{rest}/v1/models/counter{where}:predict",
                         json={"instances": [x]}, timeout=30)  # fmt: skip
    assert reply.status_code == 200, reply.text
    (prediction,) = reply.json()["predictions"]
    assert prediction["y"] == x + prediction["version"]
    return prediction["version"]


def _metric(server: ModelServer, name: str, **labels: str) -> float:
    """A sample's value on the server's Prometheus page (0 when absent)."""
    page = server.metrics.render()[0].decode()
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# -- the gate itself --------------------------------------------------------------------------


def test_the_gate_admits_its_limit_then_refuses_naming_the_flags():
    gate = AdmissionGate("grpc", threads=1, queued=1)
    gate.admit()
    gate.admit()
    with pytest.raises(ServingError) as caught:
        gate.admit()
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--grpc_max_threads 1" in caught.value.message
    assert "--max_enqueued_requests 1" in caught.value.message
    gate.start_run()
    began = time.monotonic()
    with pytest.raises(ServingError) as caught:  # the one thread is taken: wait, then give up
        gate.start_run(deadline=time.monotonic() + 0.2)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.15 < time.monotonic() - began < 5
    gate.end_run()
    gate.leave()
    gate.admit()  # a place is free again
    assert gate.in_flight == 2
    with pytest.raises(ValueError, match="--max_enqueued_requests must be 0 or more"):
        AdmissionGate("rest", threads=2, queued=-1)


def test_the_flag_reaches_the_server_and_a_negative_one_is_refused(tmp_path):
    def options(*argv: str) -> ServerOptions:
        parser = argparse.ArgumentParser(prog="genpipe")
        cli.register(parser.add_subparsers())
        return cli._server_options(parser.parse_args(["serve", "--models_root", ".", *argv]))

    assert options().max_enqueued_requests == flags.MAX_ENQUEUED_REQUESTS
    assert options("--max_enqueued_requests=0").max_enqueued_requests == 0
    manager = build_manager(models_root=str(tmp_path), poll_wait_seconds=0)
    with pytest.raises(ValueError, match="--max_enqueued_requests must be 0 or more, got -1"):
        ModelServer(manager, options("--max_enqueued_requests", "-1"))


# -- overload ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    protocol: str
    code: str  # gRPC code name; REST statuses as their code (429 -> RESOURCE_EXHAUSTED)
    seconds: float
    message: str = ""


def _flood(server: ModelServer, calls: int) -> list[Outcome]:
    """``calls`` gRPC and ``calls`` REST spin requests released at once; every outcome."""
    address = f"127.0.0.1:{server.grpc_port}"
    rest = f"http://127.0.0.1:{server.rest_port}/v1/models/spin:predict"
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "spin"
    request.inputs["steps"].CopyFrom(tf.make_tensor_proto(np.int64(SPIN_STEPS)))
    outcomes: list[Outcome] = []
    start = threading.Barrier(2 * calls)

    def grpc_call(stub) -> None:
        start.wait()
        began = time.monotonic()
        try:
            stub.Predict(request, timeout=ANSWER_SECONDS)
            outcomes.append(Outcome("grpc", "OK", time.monotonic() - began))
        except grpc.RpcError as error:
            seconds = time.monotonic() - began
            outcomes.append(Outcome("grpc", error.code().name, seconds, error.details()))

    def rest_call() -> None:
        start.wait()
        began = time.monotonic()
        try:
            reply = requests.post(rest, json={"inputs": SPIN_STEPS}, timeout=ANSWER_SECONDS)
        except requests.RequestException as error:
            outcomes.append(Outcome("rest", type(error).__name__, time.monotonic() - began))
            return
        seconds = time.monotonic() - began
        if reply.status_code == 429:
            assert reply.headers["Retry-After"] == "1"
            outcomes.append(Outcome("rest", "RESOURCE_EXHAUSTED", seconds, reply.json()["error"]))
        else:
            code = "OK" if reply.status_code == 200 else str(reply.status_code)
            outcomes.append(Outcome("rest", code, seconds, reply.text))

    channels = [grpc.insecure_channel(address) for _ in range(calls)]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
    threads = [threading.Thread(target=grpc_call, args=(stub,)) for stub in stubs]
    threads += [threading.Thread(target=rest_call) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * ANSWER_SECONDS)
    for channel in channels:
        channel.close()
    assert not any(thread.is_alive() for thread in threads), "a flooded call never answered"
    return outcomes


def test_overload_is_refused_quickly_and_the_server_recovers(tmp_path, exports):
    toy_models.push(exports["spin"], tmp_path / "spin", 1)
    toy_models.push(exports["counter1"], tmp_path / "counter", 1)
    threads, queued, calls = 2, 2, 24  # 4 held per protocol, 24 sent at once
    options = ServerOptions(port=0, rest_api_port=free_port(), workers=threads,
                            rest_api_num_threads=threads, max_enqueued_requests=queued)  # fmt: skip
    server = _server(options, models_root=str(tmp_path), poll_wait_seconds=0)
    try:
        outcomes = _flood(server, calls)
        for protocol in ("grpc", "rest"):
            mine = [o for o in outcomes if o.protocol == protocol]
            codes = {o.code for o in mine}
            assert codes <= {"OK", "RESOURCE_EXHAUSTED"}, [o for o in mine if o.code != "OK"][:3]
            ok = [o for o in mine if o.code == "OK"]
            refused = [o for o in mine if o.code == "RESOURCE_EXHAUSTED"]
            assert len(mine) == calls and len(ok) >= threads + queued and refused
            slowest = max(o.seconds for o in refused)
            assert slowest < REFUSAL_SECONDS
            assert all("--max_enqueued_requests 2" in o.message for o in refused)
            counted = _metric(server, "genpipe_serving_requests_refused_total", protocol=protocol)
            assert counted == len(refused)
            median = statistics.median(o.seconds for o in refused)
            print(f"\n{protocol}: {len(ok)} OK (slowest {max(o.seconds for o in ok):.1f} s), "
                  f"{len(refused)} refused (median {median * 1000:.0f} ms, "
                  f"slowest {slowest * 1000:.0f} ms)")  # fmt: skip
        # The load has dropped: nothing is held, and normal requests of both protocols succeed.
        assert server.gates["grpc"].in_flight == server.gates["rest"].in_flight == 0
        assert _metric(server, "genpipe_serving_requests_in_flight", protocol="grpc") == 0
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert _grpc_counter(stub, 2.0) == 1
        with requests.Session() as session:
            assert _rest_counter(session, f"http://127.0.0.1:{server.rest_port}", 2.0) == 1
    finally:
        server.stop(grace=1)


# -- version switches under load --------------------------------------------------------------


def _config(base: Path, label: int) -> model_server_config_pb2.ModelServerConfig:
    """`counter` under the latest policy (3 versions kept) with its `stable` label."""
    text = (
        f'model_config_list {{ config {{ name: "counter" base_path: "{base}" '
        "model_version_policy { latest { num_versions: 3 } } "
        f'version_labels {{ key: "stable" value: {label} }} }} }}'
    )
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


@dataclass
class Answer:
    began: float
    ended: float
    version: int
    label: str | None


class StatusLog:
    """GetModelStatus of `counter`, polled until stopped: (sent, answered, available versions)."""

    def __init__(self, address: str):
        self.polls: list[tuple[float, float, frozenset[int]]] = []
        self._address = address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusLog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "counter"
        with grpc.insecure_channel(self._address) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            while not self._stop.wait(0.01):
                sent = time.monotonic()
                response = stub.GetModelStatus(request, timeout=30)
                live = frozenset(
                    s.version for s in response.model_version_status if s.state == AVAILABLE
                )
                self.polls.append((sent, time.monotonic(), live))

    def available(self) -> set[int]:
        return set(self.polls[-1][2]) if self.polls else set()

    def could_serve(self, version: int, began: float, ended: float) -> bool:
        """Whether ``version`` may have been AVAILABLE at some time in [began, ended].

        A version is AVAILABLE over one interval. It had not started before the start of the
        last poll that did not show it (before its first sighting), and it had ended before the
        end of the first poll that no longer showed it (after its last sighting).
        """
        seen = [i for i, (_, _, live) in enumerate(self.polls) if version in live]
        if not seen:
            return False
        first, last = seen[0], seen[-1]
        earliest = self.polls[first - 1][0] if first > 0 else float("-inf")
        latest = self.polls[last + 1][1] if last + 1 < len(self.polls) else float("inf")
        return began < latest and ended > earliest


def _load_clients(
    server: ModelServer, stop: threading.Event, answers: list[Answer], failures: list[str]
) -> list[threading.Thread]:
    """CLIENTS threads, half gRPC and half REST, each sending `counter` requests until ``stop``;
    every fourth request goes by the `stable` label."""
    address, rest = f"127.0.0.1:{server.grpc_port}", f"http://127.0.0.1:{server.rest_port}"

    def client(index: int) -> None:
        with grpc.insecure_channel(address) as channel, requests.Session() as session:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            sent = 0
            while not stop.is_set():
                label = "stable" if sent % 4 == index % 4 else None
                x = float(sent % 7)
                began = time.monotonic()
                try:
                    if index % 2:
                        version = _rest_counter(session, rest, x, label)
                    else:
                        version = _grpc_counter(stub, x, label)
                except Exception as error:  # noqa: BLE001 - every failure is recorded
                    failures.append(f"client {index} ({label or 'latest'}): {error!r}")
                else:
                    answers.append(Answer(began, time.monotonic(), version, label))
                sent += 1

    return [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]


def test_version_switches_and_label_moves_under_load_fail_no_request(tmp_path, exports):
    base = tmp_path / "counter"
    toy_models.push(exports["counter1"], base, 1)
    options = ServerOptions(port=0, rest_api_port=free_port())
    server = _server(options, config=_config(base, 1), poll_wait_seconds=0.05)
    address = f"127.0.0.1:{server.grpc_port}"
    answers: list[Answer] = []
    failures: list[str] = []
    moves: list[tuple[float, float, int, int]] = []  # (sent, answered, old version, new version)
    stop = threading.Event()
    clients = _load_clients(server, stop, answers, failures)
    # 5 pushes (versions 2..6) and 2 moves of `stable`, each before the version it labelled
    # leaves the 3 the latest policy keeps; spread over the run.
    steps: list[tuple[str, int]] = [("push", 2), ("push", 3), ("label", 3), ("push", 4),
                                    ("push", 5), ("label", 5), ("push", 6)]  # fmt: skip
    began = time.monotonic()
    with StatusLog(address) as status, grpc.insecure_channel(address) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        for thread in clients:
            thread.start()
        try:
            label = 1
            for index, (kind, version) in enumerate(steps):
                due = (index + 1) * LOAD_REQUESTS // (len(steps) + 1)
                _wait_for(lambda d=due: len(answers) >= d, f"{due} answers")
                if kind == "push":
                    toy_models.push(exports[f"counter{version}"], base, version)
                    _wait_for(lambda v=version: v in status.available(), f"version {version}")
                else:
                    sent = time.monotonic()
                    reload = model_management_pb2.ReloadConfigRequest(config=_config(base, version))
                    models.HandleReloadConfigRequest(reload, timeout=60)
                    moves.append((sent, time.monotonic(), label, version))
                    label = version
            _wait_for(lambda: len(answers) >= LOAD_REQUESTS, f"{LOAD_REQUESTS} answers")
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=60)
    seconds = time.monotonic() - began
    server.stop(grace=1)
    assert not failures, failures[:5]
    assert len(answers) >= LOAD_REQUESTS
    assert {a.version for a in answers} == set(range(1, VERSIONS + 1))
    unavailable = [a for a in answers if not status.could_serve(a.version, a.began, a.ended)]
    assert not unavailable, unavailable[:5]
    wrong = [a for a in answers if a.label and a.version not in _label_targets(moves, a)]
    assert not wrong, wrong[:5]
    print(f"\n{len(answers)} answers by {CLIENTS} clients in {seconds:.1f} s "
          f"({len(answers) / seconds:.0f}/s), {len(status.polls)} status polls")  # fmt: skip


def _label_targets(moves: list[tuple[float, float, int, int]], answer: Answer) -> set[int]:
    """The versions `stable` may have named while ``answer`` was in flight: each move took
    effect at some time between its request and its answer."""
    targets = set()
    named = [moves[0][2], *(new for _, _, _, new in moves)]
    for k, version in enumerate(named):
        since = moves[k - 1][0] if k else float("-inf")  # earliest start of this naming
        until = moves[k][1] if k < len(moves) else float("inf")  # latest end of it
        if answer.began < until and answer.ended > since:
            targets.add(version)
    return targets


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# -- soak -------------------------------------------------------------------------------------


def _process() -> tuple[int, int, int]:
    """(resident bytes, threads, open file descriptors) of this process, from /proc, once the
    counts hold still for a second: garbage is collected first, and the worker threads of
    servers it frees (earlier tests') exit a moment later."""
    gc.collect()
    counts, since = None, time.monotonic()
    while time.monotonic() - since < 1.0:
        now = len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))
        if now != counts:
            counts, since = now, time.monotonic()
        time.sleep(0.1)
    status = Path("/proc/self/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss_kb * 1024, *counts


def test_soak_leaks_no_memory_threads_or_file_descriptors(tmp_path, exports):
    toy_models.push(exports["counter1"], tmp_path / "counter", 1)
    # REST connections left idle longer than the client timeout are closed by the server (its
    # defence against stalled clients): not a leak, but it would change the count; keep them.
    options = ServerOptions(port=0, rest_api_port=free_port(), rest_api_client_timeout_seconds=3600)
    server = _server(options, models_root=str(tmp_path), poll_wait_seconds=0)
    address, rest = f"127.0.0.1:{server.grpc_port}", f"http://127.0.0.1:{server.rest_port}"
    # Warm-up runs twice the soak's clients, so the worker pools have grown as far as the soak
    # could take them; every connection stays open until the end.
    channels = [grpc.insecure_channel(address) for _ in range(CLIENTS)]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
    sessions = [requests.Session() for _ in range(CLIENTS)]
    failures: list[str] = []

    def run(clients: int, total: int) -> None:
        def client(index: int) -> None:
            for sent in range(total // clients):
                try:
                    if index % 2:
                        _rest_counter(sessions[index // 2], rest, float(sent % 5))
                    else:
                        _grpc_counter(stubs[index // 2], float(sent % 5))
                except Exception as error:  # noqa: BLE001 - every failure is recorded
                    failures.append(repr(error))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    try:
        run(2 * CLIENTS, 400)
        before = _process()
        began = time.monotonic()
        run(CLIENTS, SOAK_REQUESTS)
        seconds = time.monotonic() - began
        after = _process()
    finally:
        for session in sessions:
            session.close()
        for channel in channels:
            channel.close()
        server.stop(grace=1)
    assert not failures, failures[:5]
    growth = after[0] / before[0] - 1
    print(f"\nsoak: {SOAK_REQUESTS} requests in {seconds:.1f} s; RSS {before[0] / 2**20:.1f} -> "
          f"{after[0] / 2**20:.1f} MiB ({(after[0] - before[0]) / 2**10:+.0f} KiB, {growth:+.3%}); "
          f"threads {before[1]} -> {after[1]}; fds {before[2]} -> {after[2]}")  # fmt: skip
    assert growth < MAX_RSS_GROWTH
    assert after[1:] == before[1:]  # threads, file descriptors
