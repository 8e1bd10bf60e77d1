"""tensorflow_model_server's flags as `genpipe serve` knows them: the defaults (read by
`ServerOptions`, `LoadOptions` and `--help`), value parsers, and the flags it refuses.

TensorFlow-free, so building the parser (and `--help`) stays fast.
"""

from __future__ import annotations

import argparse
import os

HOST = "127.0.0.1"  # genpipe's default; the real server listens everywhere
GRPC_PORT = 8500
REST_API_PORT = 8501  # the real server's default is 0 (no REST)
REST_API_TIMEOUT_IN_MS = 30_000
# genpipe's: a REST client must send its request line and headers, and then each part of its
# body, within this many seconds, or its connection is closed (a client that declares a body and
# never sends it, or speaks TLS to the plain port, would otherwise hold a connection forever).
REST_API_CLIENT_TIMEOUT_SECONDS = 30.0
MAX_MESSAGE_MB = 64
GRPC_MAX_THREADS = 16
# genpipe's: requests each front end lets wait for a worker thread (besides those running);
# one more is refused at once with RESOURCE_EXHAUSTED / HTTP 429 (serving/admission.py). Two
# rounds of the default 16 gRPC threads: a waiting gRPC request holds a thread of its own, and
# a queue much longer than that only makes clients wait past their deadlines.
MAX_ENQUEUED_REQUESTS = 32
FILE_SYSTEM_POLL_WAIT_SECONDS = 1.0
MODEL_CONFIG_FILE_POLL_WAIT_SECONDS = 0.0  # 0: read the file once
SAVED_MODEL_TAGS = ("serve",)
MAX_NUM_LOAD_RETRIES = 5
LOAD_RETRY_INTERVAL_MICROS = 60_000_000
ENABLE_MODEL_WARMUP = True
# genpipe's own request-limit flags (--max_tensor_elements, ...) and their defaults live in
# serving/request_limits.py (`RequestLimits`).


def rest_api_num_threads() -> int:
    """The real server's REST pool size: four threads per CPU."""
    return 4 * (os.cpu_count() or 1)


# tensorflow_model_server flags genpipe's server refuses by name (never ignores), with a hint.
UNIMPLEMENTED = {
    "grpc_socket_path": "listen on --port",
    "rest_api_enable_cors_support": "put a proxy that adds CORS headers in front",
    "enable_per_model_batching_parameters": "use --batching_parameters_file",
    "num_load_threads": "versions load one at a time on the poll thread",
    "num_unload_threads": "versions unload when their last request ends",
    "flush_filesystem_caches": "",
    "tensorflow_session_parallelism": "use --tensorflow_intra_op_parallelism and "
    "--tensorflow_inter_op_parallelism",
    "tensorflow_session_config_file": "use --tensorflow_intra_op_parallelism and "
    "--tensorflow_inter_op_parallelism",
    "use_alts_credentials": "use --ssl_config_file",
    "platform_config_file": "only TensorFlow SavedModels are served",
    "per_process_gpu_memory_fraction": "",
    "num_request_iterations_for_warmup": "each warmup record runs once",
    "remove_unused_fields_from_bundle_metagraph": "",
    "prefer_tflite_model": "",
    "num_tflite_pools": "",
    "num_tflite_interpreters_per_pool": "",
    "enable_signature_method_name_check": "",
    "xla_cpu_compilation_enabled": "",
    "xla_gpu_compilation_enabled": "",
    "enable_profiler": "",
    "thread_pool_factory_config_file": "",
    "mixed_precision": "",
    "skip_initialize_tpu": "",
    "enable_grpc_healthcheck_service": "",
    "enable_serialization_as_tensor_content": "",
}

_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


def boolean(text: str) -> bool:
    """A boolean flag's value, as tensorflow_model_server spells it: true/false (or 1/0)."""
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def tag_set(text: str) -> tuple[str, ...]:
    """`--saved_model_tags serve,gpu`: the tag set, as given."""
    tags = tuple(tag.strip() for tag in text.split(",") if tag.strip())
    if not tags:
        raise argparse.ArgumentTypeError("give at least one tag, e.g. serve")
    return tags


def channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    """`--grpc_channel_arguments grpc.max_connection_age_ms=2000,...`: (key, value) pairs;
    integer values become ints, as gRPC expects them."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        try:
            pairs.append((key.strip(), int(value)))
        except ValueError:
            pairs.append((key.strip(), value.strip()))
    return tuple(pairs)
