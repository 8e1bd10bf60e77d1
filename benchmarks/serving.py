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


def measure(call: Callable[[], object], clients: int, requests_total: int) -> dict:
    """p50/p99 latency (ms) and throughput (requests/s) of ``call`` from ``clients`` threads."""
    per_client = max(requests_total // clients, 1)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)

    def client(work: Callable[[], object]) -> None:
        for _ in range(10):  # warm up this client's connection
            work()
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


def grpc_caller(address: str, signature_name: str, inputs: dict) -> Callable:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
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
    def __init__(self, base_path: str):
        self.grpc_port, self.rest_port = free_port(), free_port()
        argv = [sys.executable, "-m", "serving", "serve", "--model_name", MODEL]
        argv += ["--model_base_path", base_path, "--port", str(self.grpc_port)]
        argv += ["--rest_api_port", str(self.rest_port), "--file_system_poll_wait_seconds", "0"]
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
        "benchmark": "serving",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": args.model_dir or "toy DenseModel 64->256->10 (batch 1)",
        "model_version": version,
        "signature": args.signature,
        "inputs": {k: [str(v.dtype), list(v.shape)] for k, v in inputs.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "grpcio": grpc.__version__,
        },
        "results": results,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--model_dir", help="model base path (version folders) to measure")
    parser.add_argument("--signature", default=DEFAULT_SIGNATURE)
    parser.add_argument("--inputs", help="columnar JSON inputs for --model_dir")
    parser.add_argument("--requests", type=int, default=800, help="requests per measurement")
    args = parser.parse_args()
    report = run(args)
    print(table(report))
    by_mode = {(r["mode"], r["clients"]): r for r in report["results"]}
    added = by_mode[("grpc", 1)]["p50_ms"] - by_mode[("in_process", 1)]["p50_ms"]
    report["grpc_added_p50_ms"] = added
    print(f"gRPC adds {added:.2f} ms at p50 over the in-process call (target: <= 2 ms)")
    old_path = by_mode[("object_graph", 1)]["p50_ms"] / by_mode[("in_process", 1)]["p50_ms"]
    report["object_graph_over_session_p50"] = old_path
    print(f"the object-graph call takes {old_path:.2f}x the session callable at p50")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
