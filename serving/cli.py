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


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"genpipe {command}: error: {message}", file=sys.stderr)
    return code


def _quiet_tensorflow(level: str = "3") -> None:
    """Keep TensorFlow's C++ start-up logs (and library deprecation notes) off the terminal."""
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", level)
    warnings.filterwarnings("ignore", category=FutureWarning)


# -- serve -------------------------------------------------------------------------------------


def register_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve SavedModels over TF Serving's gRPC and REST API",
        description="Serve model versions (<base_path>/<model>/<version>/saved_model.pb) with "
        "TensorFlow Serving's gRPC and REST API. Flags follow tensorflow_model_server.",
    )
    models = parser.add_argument_group("models (give one)")
    models.add_argument("--models_root", metavar="DIR", help="serve every model folder under DIR")
    models.add_argument("--model_config_file", metavar="FILE", help="a model_config_list file")
    models.add_argument("--model_name", default="default", help="name of the one model")
    models.add_argument("--model_base_path", metavar="DIR", help="folder of the one model")
    models.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between scans for new versions (0: load once)",
    )
    models.add_argument(
        "--allow_version_labels_for_unavailable_models",
        action="store_true",
        help="accept labels on versions that are not loaded (yet)",
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    net.add_argument("--port", type=int, default=8500, help="gRPC port")
    net.add_argument("--rest_api_port", type=int, default=8501, help="REST port; 0 disables REST")
    net.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        metavar="MS",
        help="stop a REST predict run after MS ms (504); 0 or less: no limit "
        "(default: tensorflow_model_server's)",
    )
    net.add_argument("--max_message_mb", type=int, default=64, help="largest request/response")
    net.add_argument("--monitoring_config_file", metavar="FILE", help="MonitoringConfig text proto")
    security = parser.add_argument_group("security")
    security.add_argument("--ssl_config_file", metavar="FILE", help="TF Serving SSLConfig proto")
    security.add_argument("--ssl_cert", metavar="PEM", help="server certificate (with --ssl_key)")
    security.add_argument("--ssl_key", metavar="PEM", help="server private key (with --ssl_cert)")
    security.add_argument(
        "--auth_token_file", metavar="FILE", help="require 'authorization: Bearer <token>'"
    )
    parser.set_defaults(handler=serve_command)


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
    if args.max_message_mb <= 0:
        raise ValueError(f"--max_message_mb must be positive, got {args.max_message_mb}")
    # Unset flags keep ServerOptions' defaults (TF Serving's), which live there only.
    timeout = args.rest_api_timeout_in_ms
    given = {} if timeout is None else {"rest_api_timeout_in_ms": timeout}
    return ServerOptions(
        **given,
        host=args.host,
        port=args.port,
        rest_api_port=args.rest_api_port,
        max_message_mb=args.max_message_mb,
        tls=tls,
        token=read_token(args.auth_token_file) if args.auth_token_file else None,
        metrics_path=metrics_path,
    )


def serve_command(args: argparse.Namespace) -> int:
    """Run the server until Ctrl-C or SIGTERM."""
    import logging

    _quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from serving.errors import ServingError
    from serving.server import ModelServer, build_manager

    try:
        options = _server_options(args)
        manager = build_manager(
            poll_wait_seconds=args.file_system_poll_wait_seconds,
            allow_labels_for_unavailable=args.allow_version_labels_for_unavailable_models,
            **_model_source(args),
        )
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
        "entry per model folder under ROOT.",
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

    if not Path(args.root).is_dir():
        return _fail("serving-config", f"{args.root} is not a folder")
    output = Path(args.output or Path(args.root) / "models.config")
    config = write_models_config(args.root, output, args.base_path)
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
