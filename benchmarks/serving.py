"""Serving overhead: one signature called in process, over gRPC and over REST, 1 and 8 clients.

    .venv/bin/python benchmarks/serving.py --json out/bench/serving.json

By default a small MLP SavedModel (64 -> 256 -> 10, batch 1; `DenseModel` of tests/toy_models.py)
is written to a temporary folder; ``--model_dir DIR`` measures a real one instead (a model base
path holding version folders), with ``--signature`` and ``--inputs '{"name": [...]}'`` (columnar
JSON; default: ones, or b"this movie" for strings, at batch 1). Modes, numpy in and out:
- in_process: `Servable.run`, the session callable the server runs for each request (the
  MetaGraphDef in a session, as tensorflow_model_server runs it);
- object_graph: the same signature from `tf.saved_model.load` (the Python object graph, which
  the server no longer uses), for comparison;
- grpc: PredictionService/Predict with the official stub, one channel per client;
- rest: POST :predict with the columnar JSON body, one HTTP session per client.
The server is `python -m serving serve` in its own process. Latencies are per request.

``--batching`` compares request batching (`--enable_batching`) with none, side by side, on
untrained exports written to a temporary folder, 8 gRPC clients each sending batch-1 requests:
- text_lm `generate` at the book's shapes (benchmarks/text_generation.py), 32 new words each:
  tokens/s and p50 latency (targets: >= 4x the tokens/s, p50 at most 2x);
- vae `decode` of one latent point (the book's 2-D VAE): requests/s (target: no loss), and where
  the time of this cheap signature goes (session run per batch size, gRPC, queueing).

    .venv/bin/python benchmarks/serving.py --batching --json out/bench/serving_batching.json

``--load`` measures the load figures of docs/reliability.md on `CounterModel` and `SpinModel`
(tests/toy_models.py), each server in its own process:
- 8 clients (gRPC and REST in turn) on `counter`, steady, then while 5 versions are pushed and
  the `stable` label moves twice: latency, throughput and errors;
- a soak (``--soak_requests``, default 10,000) after a warm-up: the server process's resident
  memory, threads and open file descriptors before and after, from /proc;
- overload: 24 gRPC and 24 REST calls of a slow `spin` released at once on a server with
  --grpc_max_threads=2 --rest_api_num_threads=2 --max_enqueued_requests=2: how many were
  refused, how fast, and how soon a normal call answers afterwards.

    .venv/bin/python benchmarks/serving.py --load --json out/bench/serving_load.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # toy_models: the server ships no models

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
import tensorflow as tf  # noqa: E402
import toy_models  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from serving import rest_json  # noqa: E402
from serving.config import config_for_model  # noqa: E402
from serving.manager import ModelManager  # noqa: E402
from serving.servable import DEFAULT_SIGNATURE, Servable  # noqa: E402

MODEL = "bench"
CONCURRENCY = (1, 8)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def default_inputs(signature) -> dict[str, np.ndarray]:
    """Ones (numbers) or b"this movie" (strings) at batch 1 for every input."""
    inputs = {}
    for name, info in signature.inputs.items():
        shape = [1 if d.size < 0 else d.size for d in info.tensor_shape.dim]
        dtype = tf.as_dtype(info.dtype)
        if dtype == tf.string:
            inputs[name] = np.full(shape, b"this movie", dtype=object)
        else:
            inputs[name] = np.ones(shape, dtype.as_numpy_dtype)
    return inputs


def request_inputs(args: argparse.Namespace, signature) -> dict[str, np.ndarray]:
    """--inputs (columnar JSON) as arrays, or `default_inputs`."""
    if not args.inputs:
        return default_inputs(signature)
    document = {"inputs": json.loads(args.inputs)}
    return rest_json.inputs_from_document(document, signature.inputs)[0]


def measure(
    call: Callable[[], object], clients: int, requests_total: int, warmup: int = 10
) -> dict:
    """p50/p99 latency (ms) and throughput (requests/s) of ``call`` from ``clients`` threads
    (each first calls ``warmup`` times, untimed)."""
    per_client = max(requests_total // clients, 1)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)

    def client(work: Callable[[], object]) -> None:
        try:
            for _ in range(warmup):  # warm up this client's connection
                work()
        except Exception:
            start_line.abort()  # a request that fails in warm-up ends the run, never hangs it
            raise
        start_line.wait()
        mine = []
        for _ in range(per_client):
            begin = time.perf_counter()
            try:
                work()
            except Exception as error:  # noqa: BLE001 - counted and reported
                errors.append(repr(error))
            mine.append(time.perf_counter() - begin)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(call(),)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "throughput_rps": len(latencies) / wall,
    }


def session_caller(servable: Servable, signature_name: str, inputs: dict) -> Callable:
    def make() -> Callable[[], object]:
        return lambda: servable.run(signature_name, inputs)

    return make


def object_graph_caller(version_dir: str, signature_name: str, inputs: dict) -> Callable:
    function = tf.saved_model.load(version_dir).signatures[signature_name]

    def call() -> dict:
        tensors = {name: tf.constant(value) for name, value in inputs.items()}
        return {k: v.numpy() for k, v in function(**tensors).items()}

    return lambda: call


def grpc_caller(address: str, signature_name: str, inputs: dict, model: str = MODEL) -> Callable:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))

    def make() -> Callable[[], object]:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
        return lambda: stub.Predict(request, timeout=30)

    return make


def rest_caller(url: str, signature_name: str, inputs: dict) -> Callable:
    columns = {}
    for name, value in inputs.items():
        if value.dtype == object:
            columns[name] = [v.decode() for v in value.ravel()]
            columns[name] = np.array(columns[name], dtype=object).reshape(value.shape).tolist()
        else:
            columns[name] = value.tolist()
    body = rest_json.dumps({"signature_name": signature_name, "inputs": columns})

    def make() -> Callable[[], object]:
        session = requests.Session()

        def call():
            reply = session.post(url, data=body, timeout=30)
            if reply.status_code != 200:
                raise RuntimeError(reply.text)
            return reply.content

        return call

    return make


class ServerProcess:
    def __init__(
        self, base_path: str | None, flags: tuple[str, ...] = (), poll_seconds: float = 0.0
    ):
        """Serve ``base_path`` as MODEL (None: the models in ``flags``, e.g. --models_root),
        scanning for new versions every ``poll_seconds`` (0: load once)."""
        self.grpc_port, self.rest_port = free_port(), free_port()
        argv = [sys.executable, "-m", "serving", "serve", *flags, "--port", str(self.grpc_port)]
        if base_path is not None:
            argv += ["--model_name", MODEL, "--model_base_path", base_path]
        argv += ["--rest_api_port", str(self.rest_port),
                 "--file_system_poll_wait_seconds", str(poll_seconds)]  # fmt: skip
        self.process = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(line) for line in self.process.stdout], daemon=True
        ).start()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if self.process.poll() is not None:
                    raise RuntimeError("the model server exited during startup") from None
                continue
            if line.startswith("genpipe model server:"):
                return
        raise RuntimeError("the model server did not start within 180 s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        base_path = args.model_dir
        if base_path is None:
            base_path = str(Path(scratch) / MODEL)
            toy_models.export_and_push(toy_models.DenseModel(), base_path, 1)
        # Loaded with the server's own manager and loader, held for the in-process calls.
        manager = ModelManager(config_for_model(MODEL, base_path), poll_wait_seconds=0)
        manager.start()
        server = None
        try:
            with manager.servable(MODEL) as servable:
                version = servable.version
                inputs = request_inputs(args, servable.signature(args.signature))
                server = ServerProcess(base_path)
                callers = {
                    "in_process": session_caller(servable, args.signature, inputs),
                    "object_graph": object_graph_caller(servable.path, args.signature, inputs),
                    "grpc": grpc_caller(f"127.0.0.1:{server.grpc_port}", args.signature, inputs),
                    "rest": rest_caller(
                        f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:predict",
                        args.signature,
                        inputs,
                    ),
                }
                results = [
                    {"mode": mode, **measure(make, clients, args.requests)}
                    for clients in CONCURRENCY
                    for mode, make in callers.items()
                ]
        finally:
            if server is not None:
                server.stop()
            manager.stop()
    return {
        **run_facts("serving"),
        "model": args.model_dir or "toy DenseModel 64->256->10 (batch 1)",
        "model_version": version,
        "signature": args.signature,
        "inputs": {k: [str(v.dtype), list(v.shape)] for k, v in inputs.items()},
        "results": results,
    }


def run_facts(benchmark: str) -> dict:
    """What every report records: which benchmark, when, the command and the machine."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "grpcio": grpc.__version__,
        },
    }


def table(report: dict) -> str:
    rows = [
        "| mode | clients | p50 ms | p99 ms | requests/s | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        rows.append(
            f"| {r['mode']} | {r['clients']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['throughput_rps']:.0f} | {r['errors']} |"
        )
    return "\n".join(rows)


# -- request batching ---------------------------------------------------------------------------

NEW_TOKENS = 32
CLIENTS = 8
# One request per client fills a batch; a first request waits up to 5 ms for the others (TF
# Serving's CPU advice: try 1-10 ms). num_batch_threads stays TF Serving's default (the CPUs).
BATCHING_PARAMETERS = "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 5000 }\n"
METRICS_PATH = "/monitoring/prometheus/metrics"


def export_batching_models(root: Path) -> None:
    """Untrained `text_lm` (the book's shapes) and `vae` exports under ``root``."""
    from benchmarks import text_generation as book
    from models.image_exports import export_vae
    from models.text.export import export_text_lm
    from models.text.lm import build_lm
    from models.text.standardize import vocabulary_with_specials
    from models.vae import build_vae

    tf.keras.utils.set_random_seed(0)
    model = build_lm(
        book.VOCAB_SIZE, book.SEQUENCE_LENGTH, book.EMBED_DIM, book.LATENT_DIM, book.NUM_HEADS
    )
    words = book.PROMPT.split() + [f"word{i}" for i in range(book.VOCAB_SIZE - 4)]
    export_text_lm(model, vocabulary_with_specials(words), str(root / "text_lm" / "1"))
    export_vae(build_vae(seed=0), root / "vae" / "1")


def generate_inputs() -> dict[str, np.ndarray]:
    from benchmarks.text_generation import PROMPT

    return {
        "prompt": np.array([PROMPT.encode()], dtype=object),
        "max_tokens": np.int32([NEW_TOKENS]),
        "temperature": np.float32([1.0]),
        "top_k": np.int32([0]),
        "top_p": np.float32([1.0]),
        "seed": np.int64([7]),
    }


def decode_inputs(rows: int = 1) -> dict[str, np.ndarray]:
    return {"z": np.tile(np.float32([[0.5, -0.5]]), (rows, 1))}


def session_run_ms(version_dir: str, rows: tuple[int, ...], repeats: int = 50) -> dict[int, float]:
    """Median `Servable.run` time of vae `decode` (ms) for each batch size in ``rows``."""
    from serving.servable import load_servable

    servable = load_servable("vae", 1, version_dir)
    try:
        times = {}
        for size in rows:
            inputs = decode_inputs(size)
            for _ in range(5):
                servable.run("decode", inputs)
            runs = []
            for _ in range(repeats):
                begin = time.perf_counter()
                servable.run("decode", inputs)
                runs.append(time.perf_counter() - begin)
            times[size] = 1000 * statistics.median(runs)
        return times
    finally:
        servable.close()


def batch_totals(rest_port: int) -> dict[str, dict[str, float]]:
    """{signature: {"sum": rows, "count": runs}} of the server's genpipe_serving_batch_size."""
    from prometheus_client.parser import text_string_to_metric_families

    page = requests.get(f"http://127.0.0.1:{rest_port}{METRICS_PATH}", timeout=30).text
    sums: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            kind = sample.name.removeprefix("genpipe_serving_batch_size_")
            if kind in ("sum", "count"):
                sums.setdefault(sample.labels["signature"], {})[kind] = sample.value
    return sums


def mean_batch(before: dict, after: dict, signature: str) -> float:
    """Rows per merged run between two `batch_totals` (1 without batching)."""
    empty = {"sum": 0.0, "count": 0.0}
    old, new = before.get(signature, empty), after.get(signature, empty)
    runs = new["count"] - old["count"]
    return (new["sum"] - old["sum"]) / runs if runs else 1.0


def measure_server(root: Path, scratch: Path, batching: bool, args: argparse.Namespace) -> list:
    """generate (8 clients) and decode (1 and 8 clients) against one server."""
    monitoring = scratch / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}')
    flags = ["--models_root", str(root), "--monitoring_config_file", str(monitoring)]
    if batching:
        parameters = scratch / "batching.config"
        parameters.write_text(args.batching_parameters)
        flags += ["--enable_batching", "--batching_parameters_file", str(parameters)]
    server = ServerProcess(None, tuple(flags))
    address = f"127.0.0.1:{server.grpc_port}"
    try:
        cases = [
            ("generate", CLIENTS, args.text_requests, 2, generate_inputs(), "text_lm"),
            ("decode", 1, args.requests, 10, decode_inputs(), "vae"),
            ("decode", CLIENTS, args.requests, 10, decode_inputs(), "vae"),
        ]
        results = []
        for signature, clients, total, warmup, inputs, model in cases:
            caller = grpc_caller(address, signature, inputs, model)
            before = batch_totals(server.rest_port)
            row = measure(caller, clients, total, warmup)
            row["mean_batch"] = mean_batch(before, batch_totals(server.rest_port), signature)
            if signature == "generate":
                row["tokens_per_s"] = row["throughput_rps"] * NEW_TOKENS
            results.append({"signature": signature, "batching": batching, **row})
        return results
    finally:
        server.stop()


def run_batching(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "models"
        export_batching_models(root)
        decode_ms = session_run_ms(str(root / "vae" / "1"), (1, 2, 4, 8))
        results = []
        for batching in (False, True):
            results += measure_server(root, Path(scratch), batching, args)
    return {
        **run_facts("serving_batching"),
        "batching_parameters": args.batching_parameters,
        "new_tokens": NEW_TOKENS,
        "decode_session_run_ms": decode_ms,
        "results": results,
    }


def batching_summary(report: dict) -> str:
    """The table, the ratios against their targets, and where decode's time goes."""
    rows = [
        "| signature | batching | clients | p50 ms | p99 ms | requests/s | tokens/s | mean batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        tokens = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-"
        rows.append(
            f"| {r['signature']} | {'on' if r['batching'] else 'off'} | {r['clients']} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['throughput_rps']:.1f} | {tokens} | "
            f"{r['mean_batch']:.2f} |"
        )
    pick = {(r["signature"], r["batching"], r["clients"]): r for r in report["results"]}
    off, on = pick[("generate", False, CLIENTS)], pick[("generate", True, CLIENTS)]
    tokens = on["tokens_per_s"] / off["tokens_per_s"]
    p50 = on["p50_ms"] / off["p50_ms"]
    decode = (
        pick[("decode", True, CLIENTS)]["throughput_rps"]
        / pick[("decode", False, CLIENTS)]["throughput_rps"]
    )
    report["ratios"] = {"generate_tokens_per_s": tokens, "generate_p50": p50, "decode_rps": decode}
    run = report["decode_session_run_ms"]
    alone = pick[("decode", False, 1)]["p50_ms"]
    batched = pick[("decode", True, CLIENTS)]
    rows += [
        "",
        f"generate, {CLIENTS} clients: batching gives {tokens:.2f}x the tokens/s (target >= 4) "
        f"at {p50:.2f}x the p50 latency (target <= 2)",
        f"decode, {CLIENTS} clients: batching gives {decode:.2f}x the requests/s (target >= 1)",
        "decode, where the time goes: session run "
        + ", ".join(f"batch {size}: {ms:.2f} ms" for size, ms in run.items())
        + f"; one client over gRPC without batching {alone:.2f} ms at p50, so gRPC, protos and "
        f"Python add {alone - run[1]:.2f} ms; with batching at {CLIENTS} clients the mean batch is "
        f"{batched['mean_batch']:.1f} and p50 {batched['p50_ms']:.2f} ms, of which the merged "
        f"run is about {run[min(run, key=lambda s: abs(s - batched['mean_batch']))]:.2f} ms",
    ]
    return "\n".join(rows)


# -- load: version switches, overload, soak -----------------------------------------------------

SWITCH_VERSIONS = 6  # version 1, then 5 pushed under load
SWITCH_SECONDS = 1.5  # between one switch (a push or a label move) and the next
OVERLOAD_FLAGS = ("--grpc_max_threads=2", "--rest_api_num_threads=2", "--max_enqueued_requests=2")
OVERLOAD_CALLS = 24  # per protocol, released at once
SPIN_STEPS = 50_000


def counter_config(base: Path, label: int) -> str:
    """`counter` under the latest policy (3 versions kept) with its `stable` label."""
    return (
        f'model_config_list {{ config {{ name: "counter" base_path: "{base}" '
        "model_version_policy { latest { num_versions: 3 } } "
        f'version_labels {{ key: "stable" value: {label} }} }} }}'
    )


def mixed_counter_callers(server: ServerProcess) -> Callable:
    """Client factory for `measure`: gRPC and REST clients in turn, `counter` at x = 1."""
    address = f"127.0.0.1:{server.grpc_port}"
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/counter:predict"
    inputs = {"x": np.float32([1])}
    makers = [grpc_caller(address, DEFAULT_SIGNATURE, inputs, "counter"),
              rest_caller(url, DEFAULT_SIGNATURE, inputs)]  # fmt: skip
    made = iter(range(1_000_000))
    return lambda: makers[next(made) % 2]()


def switch_versions(server: ServerProcess, root: Path, exports: dict[int, Path]) -> list[float]:
    """Push versions 2..SWITCH_VERSIONS and move `stable` twice (after versions 3 and 5),
    SWITCH_SECONDS apart; returns when each switch was made (time.perf_counter)."""
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
    from tensorflow_serving.config import model_server_config_pb2

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    made = []
    for version in range(2, SWITCH_VERSIONS + 1):
        time.sleep(SWITCH_SECONDS)
        toy_models.push(exports[version], root / "counter", version)
        made.append(time.perf_counter())
        if version in (3, 5):
            time.sleep(SWITCH_SECONDS)
            config = text_format.Parse(
                counter_config(root / "counter", version),
                model_server_config_pb2.ModelServerConfig(),
            )
            request = model_management_pb2.ReloadConfigRequest(config=config)
            models.HandleReloadConfigRequest(request, timeout=60)
            made.append(time.perf_counter())
    channel.close()
    return made


def flood(server: ServerProcess) -> dict:
    """OVERLOAD_CALLS gRPC and REST spin calls released at once: outcomes and latencies."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "spin"
    request.inputs["steps"].CopyFrom(tf.make_tensor_proto(np.int64(SPIN_STEPS)))
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/spin:predict"
    results: list[tuple[str, str, float]] = []
    start = threading.Barrier(2 * OVERLOAD_CALLS)

    def call(protocol: str) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        start.wait()
        began = time.perf_counter()
        if protocol == "grpc":
            try:
                stub.Predict(request, timeout=300)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
        else:
            status = requests.post(url, json={"inputs": SPIN_STEPS}, timeout=300).status_code
            code = {200: "OK", 429: "RESOURCE_EXHAUSTED"}.get(status, str(status))
        results.append((protocol, code, time.perf_counter() - began))
        channel.close()

    threads = [threading.Thread(target=call, args=(protocol,))
               for protocol in ("grpc", "rest") for _ in range(OVERLOAD_CALLS)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = time.perf_counter()
    # Recovery: how soon after the flood a normal call answers.
    grpc_caller(f"127.0.0.1:{server.grpc_port}", DEFAULT_SIGNATURE, {"x": np.float32([1])},
                "counter")()()  # fmt: skip
    recovered_ms = 1000 * (time.perf_counter() - ended)
    report: dict = {"calls_per_protocol": OVERLOAD_CALLS, "recovery_ms": recovered_ms}
    for protocol in ("grpc", "rest"):
        for code in sorted({c for p, c, _ in results if p == protocol}):
            times = sorted(t for p, c, t in results if p == protocol and c == code)
            report[f"{protocol}_{code}"] = {
                "count": len(times),
                "p50_ms": 1000 * statistics.median(times),
                "max_ms": 1000 * times[-1],
            }
    return report


def process_figures(pid: int) -> dict:
    """Resident memory (MiB), threads and open file descriptors of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {
        "rss_mib": rss_kb / 1024,
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def run_load(args: argparse.Namespace) -> dict:
    """Version switches under 8 mixed clients, an overload flood, and a soak of the server
    process (its own RSS, threads and descriptors)."""
    report = run_facts("serving-load")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "models"
        exports = {v: toy_models.save(toy_models.CounterModel(v), Path(scratch) / f"c{v}")
                   for v in range(1, SWITCH_VERSIONS + 1)}  # fmt: skip
        toy_models.push(exports[1], root / "counter", 1)
        config = Path(scratch) / "models.config"
        config.write_text(counter_config(root / "counter", 1))
        server = ServerProcess(None, ("--model_config_file", str(config)), poll_seconds=0.2)
        try:
            callers = mixed_counter_callers(server)
            report["steady"] = measure(callers, CLIENTS, args.load_requests)
            switches: list[float] = []
            pusher = threading.Thread(
                target=lambda: switches.extend(switch_versions(server, root, exports))
            )
            pusher.start()
            report["switching"] = measure(callers, CLIENTS, args.load_requests)
            pusher.join()
            report["switches"] = len(switches)
            # The same clients (and connections) warm up and soak.
            clients = [callers() for _ in range(CLIENTS)]
            measure(iter(clients).__next__, CLIENTS, 2_000)
            before = process_figures(server.process.pid)
            report["soak"] = measure(iter(clients).__next__, CLIENTS, args.soak_requests)
            report["soak"].update(before=before, after=process_figures(server.process.pid))
        finally:
            server.stop()
        toy_models.export_and_push(toy_models.SpinModel(), root / "spin", 1)
        models_root = ("--models_root", str(root), *OVERLOAD_FLAGS)
        server = ServerProcess(None, models_root)
        try:
            report["overload"] = flood(server)
        finally:
            server.stop()
    return report


def load_summary(report: dict) -> str:
    def line(name: str, r: dict) -> str:
        return (f"{name}: {r['requests']} requests by {r['clients']} clients, "
                f"{r['errors']} errors, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                f"{r['throughput_rps']:.0f}/s")  # fmt: skip

    soak = report["soak"]
    before, after = soak["before"], soak["after"]
    rows = [
        line("steady", report["steady"]),
        line(f"during {report['switches']} switches", report["switching"]),
        line("soak", soak),
        f"soak server process: RSS {before['rss_mib']:.0f} -> {after['rss_mib']:.0f} MiB "
        f"({after['rss_mib'] / before['rss_mib'] - 1:+.2%}), threads {before['threads']} -> "
        f"{after['threads']}, fds {before['fds']} -> {after['fds']}",
    ]
    overload = report["overload"]
    for key, value in overload.items():
        if isinstance(value, dict):
            rows.append(f"overload {key}: {value['count']} calls, p50 {value['p50_ms']:.0f} ms, "
                        f"max {value['max_ms']:.0f} ms")  # fmt: skip
    rows.append(f"overload recovery: a normal call answered {overload['recovery_ms']:.0f} ms "
                "after the flood ended")  # fmt: skip
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--model_dir", help="model base path (version folders) to measure")
    parser.add_argument("--signature", default=DEFAULT_SIGNATURE)
    parser.add_argument("--inputs", help="columnar JSON inputs for --model_dir")
    parser.add_argument("--requests", type=int, default=800, help="requests per measurement")
    parser.add_argument(
        "--batching", action="store_true", help="compare --enable_batching with none instead"
    )
    parser.add_argument(
        "--text_requests", type=int, default=96, help="generate requests per measurement"
    )
    parser.add_argument(
        "--batching_parameters",
        default=BATCHING_PARAMETERS,
        help="BatchingParameters text proto for --batching",
    )
    parser.add_argument(
        "--load",
        action="store_true",
        help="version switches under load, an overload flood and a soak instead",
    )
    parser.add_argument(
        "--load_requests", type=int, default=5_000, help="requests per --load measurement"
    )
    parser.add_argument(
        "--soak_requests", type=int, default=10_000, help="requests of the --load soak"
    )
    args = parser.parse_args()
    if args.load:
        report = run_load(args)
        print(load_summary(report))
        write_json(report, args.json)
        return 0
    if args.batching:
        report = run_batching(args)
        print(batching_summary(report))
        write_json(report, args.json)
        return 0
    report = run(args)
    print(table(report))
    by_mode = {(r["mode"], r["clients"]): r for r in report["results"]}
    added = by_mode[("grpc", 1)]["p50_ms"] - by_mode[("in_process", 1)]["p50_ms"]
    report["grpc_added_p50_ms"] = added
    print(f"gRPC adds {added:.2f} ms at p50 over the in-process call (target: <= 2 ms)")
    old_path = by_mode[("object_graph", 1)]["p50_ms"] / by_mode[("in_process", 1)]["p50_ms"]
    report["object_graph_over_session_p50"] = old_path
    print(f"the object-graph call takes {old_path:.2f}x the session callable at p50")
    write_json(report, args.json)
    return 0


def write_json(report: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
