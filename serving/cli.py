"""Command line of the model server: `serve` and `serving-config`.

`generate` belongs to the client (`client/cli.py`). `register(subparsers)` adds these to
``genpipe``; ``python -m serving`` runs them on their own. Handlers import TensorFlow lazily so
``--help`` stays fast, and print one clear line (no traceback) when something is wrong.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from serving import flags, request_limits


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"genpipe {command}: error: {message}", file=sys.stderr)
    return code


# -- serve -------------------------------------------------------------------------------------

# Flags left out keep their defaults, which live in `serving.flags` only (argparse stores
# nothing for them). Flag -> `ServerOptions` field:
_SERVER_FIELDS = {
    "host": "host",
    "port": "port",
    "rest_api_port": "rest_api_port",
    "rest_api_timeout_in_ms": "rest_api_timeout_in_ms",
    "rest_api_num_threads": "rest_api_num_threads",
    "rest_api_client_timeout_seconds": "rest_api_client_timeout_seconds",
    "grpc_max_threads": "workers",
    "max_enqueued_requests": "max_enqueued_requests",
    "grpc_channel_arguments": "grpc_channel_arguments",
    "max_message_mb": "max_message_mb",
    "model_config_file": "model_config_file",
    "model_config_file_poll_wait_seconds": "model_config_file_poll_wait_seconds",
    "enable_batching": "enable_batching",
    "batching_parameters_file": "batching_parameters_file",
}
# Flag -> `LoadOptions` field:
_LOAD_FIELDS = {
    "saved_model_tags": "saved_model_tags",
    "tensorflow_intra_op_parallelism": "intra_op_threads",
    "tensorflow_inter_op_parallelism": "inter_op_threads",
    "enable_model_warmup": "enable_model_warmup",
    "max_num_load_retries": "max_num_load_retries",
    "load_retry_interval_micros": "load_retry_interval_micros",
}
_UNSET = argparse.SUPPRESS


def _switch(group, name: str, help_text: str) -> None:
    """A boolean flag as tensorflow_model_server takes it: bare ``--name``, ``--name=true|false``
    (or ``--name true|false``)."""
    group.add_argument(
        f"--{name}",
        nargs="?",
        const=True,
        type=flags.boolean,
        default=_UNSET,
        metavar="true|false",
        help=help_text,
    )


class _Unimplemented(argparse.Action):
    """A tensorflow_model_server flag genpipe's server does not implement: refused by name."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="?", default=_UNSET, help=_UNSET)

    def __call__(self, parser, namespace, values, option_string=None):
        hint = flags.UNIMPLEMENTED[self.dest]
        parser.error(
            f"{option_string} is a tensorflow_model_server flag that genpipe's model server "
            f"does not implement{f' ({hint})' if hint else ''}"
        )


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(
            option_strings, dest, nargs=0, default=_UNSET, help="print the versions and exit"
        )

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def version_text() -> str:
    """`--version`: genpipe's and TensorFlow's versions (read from the installed packages)."""
    from importlib import metadata

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (
        f"genpipe model server: {installed('genpipe')}\n"
        f"TensorFlow Library: {installed('tensorflow')}\n"
        f"TensorFlow Serving API: {installed('tensorflow-serving-api')}"
    )


def register_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve SavedModels over TF Serving's gRPC and REST API",
        description="Serve model versions (<base_path>/<model>/<version>/saved_model.pb) with "
        "TensorFlow Serving's gRPC and REST API. Flags follow tensorflow_model_server: "
        "--flag=value or --flag value; booleans as --flag, --flag=true or --flag=false.",
        allow_abbrev=False,  # as tensorflow_model_server: a flag is spelled out
    )
    models = parser.add_argument_group("models (give one)")
    models.add_argument("--models_root", metavar="DIR", help="serve every model folder under DIR")
    models.add_argument("--model_config_file", metavar="FILE", help="a model_config_list file")
    models.add_argument("--model_name", default="default", help="name of the one model")
    models.add_argument("--model_base_path", metavar="DIR", help="folder of the one model")
    polling = parser.add_argument_group("polling")
    polling.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=_UNSET,
        metavar="S",
        help="seconds between scans for new versions (0: load once; default "
        f"{flags.FILE_SYSTEM_POLL_WAIT_SECONDS:g})",
    )
    polling.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=_UNSET,
        metavar="S",
        help="re-read --model_config_file every S seconds and apply changes live "
        f"(0: never; default {flags.MODEL_CONFIG_FILE_POLL_WAIT_SECONDS:g})",
    )
    _switch(
        polling,
        "allow_version_labels_for_unavailable_models",
        "accept labels on versions that are not loaded (yet) (default false)",
    )
    loading = parser.add_argument_group("loading")
    loading.add_argument(
        "--saved_model_tags",
        type=flags.tag_set,
        default=_UNSET,
        metavar="TAGS",
        help="comma-separated tag set of the MetaGraphDef to load "
        f"(default {','.join(flags.SAVED_MODEL_TAGS)})",
    )
    for kind in ("intra", "inter"):
        loading.add_argument(
            f"--tensorflow_{kind}_op_parallelism",
            type=int,
            default=_UNSET,
            metavar="N",
            help=f"session {kind}_op_parallelism_threads (default 0: TensorFlow picks)",
        )
    _switch(loading, "enable_model_warmup", "replay assets.extra warmup requests (default true)")
    loading.add_argument(
        "--max_num_load_retries",
        type=int,
        default=_UNSET,
        metavar="N",
        help=f"retries of a failed load (default {flags.MAX_NUM_LOAD_RETRIES})",
    )
    loading.add_argument(
        "--load_retry_interval_micros",
        type=int,
        default=_UNSET,
        metavar="US",
        help=f"wait between load retries (default {flags.LOAD_RETRY_INTERVAL_MICROS})",
    )
    _switch(loading, "enable_batching", "batch concurrent requests (default false)")
    loading.add_argument(
        "--batching_parameters_file",
        default=_UNSET,
        metavar="FILE",
        help="BatchingParameters text proto for --enable_batching",
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=_UNSET, help=f"address to listen on (default {flags.HOST})")
    net.add_argument(
        "--port", type=int, default=_UNSET, help=f"gRPC port (default {flags.GRPC_PORT})"
    )
    net.add_argument(
        "--rest_api_port",
        type=int,
        default=_UNSET,
        help=f"REST port; 0 disables REST (default {flags.REST_API_PORT})",
    )
    net.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=_UNSET,
        metavar="MS",
        help="stop a REST predict run after MS ms (504); 0 or less: no limit "
        f"(default {flags.REST_API_TIMEOUT_IN_MS})",
    )
    net.add_argument(
        "--rest_api_client_timeout_seconds",
        type=float,
        default=_UNSET,
        metavar="S",
        help="drop a REST client whose headers, or any part of its body, take longer than S "
        f"seconds to arrive (default {flags.REST_API_CLIENT_TIMEOUT_SECONDS:g})",
    )
    net.add_argument(
        "--rest_api_num_threads",
        type=int,
        default=_UNSET,
        metavar="N",
        help="REST worker threads (default 4 per CPU)",
    )
    net.add_argument(
        "--grpc_max_threads",
        type=int,
        default=_UNSET,
        metavar="N",
        help=f"gRPC worker threads (default {flags.GRPC_MAX_THREADS})",
    )
    net.add_argument(
        "--max_enqueued_requests",
        type=int,
        default=_UNSET,
        metavar="N",
        help="requests gRPC and REST each let wait for a worker thread; more are refused at once "
        f"with RESOURCE_EXHAUSTED / HTTP 429 (default {flags.MAX_ENQUEUED_REQUESTS})",
    )
    net.add_argument(
        "--grpc_channel_arguments",
        type=flags.channel_arguments,
        default=_UNSET,
        metavar="K=V,...",
        help="gRPC server options, e.g. grpc.max_connection_age_ms=2000",
    )
    net.add_argument(
        "--max_message_mb",
        type=int,
        default=_UNSET,
        help=f"largest request/response (default {flags.MAX_MESSAGE_MB})",
    )
    net.add_argument("--monitoring_config_file", metavar="FILE", help="MonitoringConfig text proto")
    security = parser.add_argument_group("security")
    security.add_argument("--ssl_config_file", metavar="FILE", help="TF Serving SSLConfig proto")
    security.add_argument("--ssl_cert", metavar="PEM", help="server certificate (with --ssl_key)")
    security.add_argument("--ssl_key", metavar="PEM", help="server private key (with --ssl_cert)")
    security.add_argument(
        "--auth_token_file", metavar="FILE", help="require 'authorization: Bearer <token>'"
    )
    limits = parser.add_argument_group(
        "request limits (genpipe's; a request over one is refused with INVALID_ARGUMENT)"
    )
    for name, help_text in request_limits.HELP.items():
        limits.add_argument(
            f"--{name}",
            type=int,
            default=_UNSET,
            metavar="N",
            help=f"{help_text} (default {getattr(request_limits.DEFAULTS, name)})",
        )
    parser.add_argument("--version", action=_Version)
    for name in flags.UNIMPLEMENTED:
        parser.add_argument(f"--{name}", action=_Unimplemented)
    parser.set_defaults(handler=serve_command)


def _given(args: argparse.Namespace, fields: dict[str, str]) -> dict:
    """The flags in ``fields`` that were given, as keyword arguments under their field names."""
    values = vars(args)
    return {field: values[flag] for flag, field in fields.items() if values.get(flag) is not None}


def _model_source(args: argparse.Namespace) -> dict:
    """Keyword arguments of `build_manager` from the model flags."""
    from serving import config as config_lib

    given = [f for f in ("models_root", "model_config_file", "model_base_path") if getattr(args, f)]
    if len(given) != 1:
        raise ValueError(
            "give exactly one of --models_root DIR (e.g. runs/serving), --model_config_file FILE "
            "or --model_name NAME --model_base_path DIR"
        )
    if args.models_root:
        if not Path(args.models_root).is_dir():
            raise ValueError(f"--models_root {args.models_root} is not a folder")
        return {"models_root": os.path.abspath(args.models_root)}
    if args.model_config_file:
        return {"config": config_lib.read_model_config_file(args.model_config_file)}
    return {"config": config_lib.config_for_model(args.model_name, args.model_base_path)}


def _load_options(args: argparse.Namespace):
    from serving.manager import LoadOptions

    options = LoadOptions(**_given(args, _LOAD_FIELDS))
    for flag, value in (
        ("tensorflow_intra_op_parallelism", options.intra_op_threads),
        ("tensorflow_inter_op_parallelism", options.inter_op_threads),
        ("max_num_load_retries", options.max_num_load_retries),
    ):
        if value < 0:
            raise ValueError(f"--{flag} must be 0 or more, got {value}")
    return options


def _manager_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of `build_manager` besides the model source."""
    fields = {
        "file_system_poll_wait_seconds": "poll_wait_seconds",
        "allow_version_labels_for_unavailable_models": "allow_labels_for_unavailable",
    }
    return {**_given(args, fields), "load_options": _load_options(args)}


def _server_options(args: argparse.Namespace):
    from serving import config as config_lib
    from serving.security import TlsConfig, read_token
    from serving.server import ServerOptions

    if args.ssl_config_file and (args.ssl_cert or args.ssl_key):
        raise ValueError("give --ssl_config_file or --ssl_cert/--ssl_key, not both")
    if bool(args.ssl_cert) != bool(args.ssl_key):
        raise ValueError("--ssl_cert and --ssl_key go together")
    tls = None
    if args.ssl_config_file:
        tls = TlsConfig.from_ssl_config_file(args.ssl_config_file)
    elif args.ssl_cert:
        tls = TlsConfig.from_files(args.ssl_cert, args.ssl_key)
    metrics_path = None
    if args.monitoring_config_file:
        monitoring = config_lib.read_monitoring_config(args.monitoring_config_file)
        if monitoring.prometheus_config.enable:
            metrics_path = monitoring.prometheus_config.path
    options = ServerOptions(
        **_given(args, _SERVER_FIELDS),
        tls=tls,
        token=read_token(args.auth_token_file) if args.auth_token_file else None,
        metrics_path=metrics_path,
    )
    for flag, value in (
        ("rest_api_client_timeout_seconds", options.rest_api_client_timeout_seconds),
        ("max_message_mb", options.max_message_mb),
        ("rest_api_num_threads", options.rest_api_num_threads),
        ("grpc_max_threads", options.workers),
    ):
        if value <= 0:
            raise ValueError(f"--{flag} must be positive, got {value}")
    if options.model_config_file_poll_wait_seconds > 0 and not options.model_config_file:
        raise ValueError("--model_config_file_poll_wait_seconds needs --model_config_file")
    return options


def _request_limits(args: argparse.Namespace) -> request_limits.RequestLimits:
    """The request limits from their flags (those left out keep their defaults)."""
    given = {name: name for name in request_limits.HELP}
    return request_limits.RequestLimits(**_given(args, given))


def serve_command(args: argparse.Namespace) -> int:
    """Run the server until Ctrl-C or SIGTERM."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from serving.errors import ServingError
    from serving.server import ModelServer, build_manager

    try:
        options = _server_options(args)
        request_limits.configure(_request_limits(args))
        manager = build_manager(**_manager_kwargs(args), **_model_source(args))
        server = ModelServer(manager, options)
        server.start()
    except (ValueError, OSError, RuntimeError) as error:
        return _fail("serve", str(error))
    except ServingError as error:
        return _fail("serve", error.message)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(server.describe(), flush=True)
    while not stop.wait(0.5):
        pass
    print("genpipe model server: shutting down (finishing in-flight requests)", flush=True)
    server.stop(grace=10.0)
    print("genpipe model server: stopped", flush=True)
    return 0


# -- serving-config ----------------------------------------------------------------------------


def register_serving_config(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serving-config",
        help="write a models.config for the model folders under a root",
        description="Write a model_config_list (TF Serving's --model_config_file) with one "
        "entry per model folder under ROOT; entries already in the output file keep their "
        "version policy and labels.",
    )
    parser.add_argument("root", help="model root (<root>/<model>/<version>/saved_model.pb)")
    parser.add_argument(
        "-o", "--output", default=None, help="file to write (default ROOT/models.config)"
    )
    parser.add_argument(
        "--base_path",
        default=None,
        help="path of ROOT as the server sees it, e.g. /models in the tensorflow/serving image",
    )
    parser.set_defaults(handler=serving_config_command)


def serving_config_command(args: argparse.Namespace) -> int:
    from serving.config import write_models_config
    from serving.errors import ServingError

    if not Path(args.root).is_dir():
        return _fail("serving-config", f"{args.root} is not a folder")
    output = Path(args.output or Path(args.root) / "models.config")
    command = " ".join(
        [args.root, *(["-o", args.output] if args.output else []),
         *(["--base_path", args.base_path] if args.base_path else [])]
    )
    try:
        config = write_models_config(args.root, output, args.base_path, command)
    except (ValueError, ServingError) as error:  # an existing file that is not a usable config
        return _fail("serving-config", f"{output}: {error} (fix or remove it; it is regenerated)")
    names = [model.name for model in config.model_config_list.config]
    if not names:
        print(
            f"warning: no model folders (with version folders) under {args.root}", file=sys.stderr
        )
    print(f"wrote {output}: {len(names)} model(s) {', '.join(names)}")
    return 0


# -- entry points ------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` and `serving-config` to a ``genpipe`` subparsers object.

    Each subcommand sets ``handler``: a function of the parsed args returning the exit code.
    """
    register_serve(subparsers)
    register_serving_config(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving``: the serving subcommands on their own."""
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)
