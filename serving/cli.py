"""Command line of the serving area: `serve`, `serving-config` and `generate`.

`register(subparsers)` adds them to ``genpipe``; ``python -m serving`` runs them on their own.
Handlers import TensorFlow lazily so ``--help`` stays fast, and print one clear line (no
traceback) when something is wrong.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

SERVER_ENV = "GENPIPE_SERVER"
TOKEN_ENV = "GENPIPE_SERVING_TOKEN"


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
    return ServerOptions(
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


# -- generate ----------------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, "127.0.0.1:8500"),
        help=f"gRPC address host:port (default ${SERVER_ENV} or 127.0.0.1:8500)",
    )
    group.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer")
    group.add_argument("--root-cert", help="PEM CA/certificate of a TLS server")
    group.add_argument("--token-file", help=f"bearer token file (or set ${TOKEN_ENV})")
    group.add_argument("--model", help="model name (default: the contract's name)")
    return common


def register_generate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="ask a running model server for text, digits, faces, dreams or styled images",
        description="Ask a running model server (`genpipe serve`) for generations.",
    )
    common = [_connection_options()]
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(handler=usage)

    text = kinds.add_parser("text", parents=common, help="continue a prompt (text_lm generate)")
    text.add_argument("prompt")
    text.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    text.add_argument("--max-tokens", type=int, default=50)
    text.add_argument("--top-k", type=int, default=0, help="0 = off")
    text.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    text.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    text.add_argument(
        "-n", "--n", type=int, default=1, help="number of samples (seeds seed..seed+n-1)"
    )
    text.add_argument("-o", "--output", help="also write the texts to this file")
    text.set_defaults(handler=generate_command)

    for kind, what in (
        ("digits", "VAE samples (vae sample)"),
        ("faces", "GAN samples (gan generate)"),
    ):
        images = kinds.add_parser(kind, parents=common, help=f"a grid of {what}")
        images.add_argument("-n", type=int, default=16, help="number of images")
        images.add_argument("--seed", type=int, default=None, help="first seed (default random)")
        images.add_argument("--columns", type=int, default=None, help="grid columns")
        images.add_argument("-o", "--output", default=f"{kind}.png", help="grid PNG to write")
        images.set_defaults(handler=generate_command)

    dream = kinds.add_parser("dream", parents=common, help="DeepDream an image")
    dream.add_argument("image", help="input JPEG/PNG")
    dream.add_argument("-o", "--output", default="dream.png")
    dream.add_argument("--iterations", type=int, default=30)
    dream.add_argument("--octaves", type=int, default=3)
    dream.add_argument("--octave-scale", type=float, default=1.4)
    dream.add_argument("--step", type=float, default=20.0)
    dream.add_argument("--max-loss", type=float, default=15.0)
    dream.set_defaults(handler=generate_command)

    style = kinds.add_parser("style", parents=common, help="neural style transfer")
    style.add_argument("content", help="content image")
    style.add_argument("style", nargs="?", help="style image (not with --fast)")
    style.add_argument("-o", "--output", default="styled.png")
    style.add_argument("--fast", metavar="STYLE", help="use the trained fast_style_STYLE model")
    style.add_argument("--iterations", type=int, default=100, help="the book runs 4000")
    style.add_argument("--height", type=int, default=400)
    style.add_argument("--content-weight", type=float, default=2.5e-8)
    style.add_argument("--style-weight", type=float, default=1e-6)
    style.add_argument("--tv-weight", type=float, default=1e-6)
    style.set_defaults(handler=generate_command)


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    return os.environ.get(TOKEN_ENV) or None


def _seed(args: argparse.Namespace) -> int:
    """The first seed: --seed, or a random one (reported after success, to reproduce it)."""
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
        args.random_seed = True
    return args.seed


def _report_seed(args: argparse.Namespace) -> None:
    if getattr(args, "random_seed", False):
        print(f"seed {args.seed} (pass --seed {args.seed} to repeat)", file=sys.stderr)


def generate_command(args: argparse.Namespace) -> int:
    """Run one `generate KIND`; a down server or a refused request is one line on stderr."""
    _quiet_tensorflow()
    from serving.client import ModelServerClient, ModelServerError

    try:
        client = ModelServerClient(
            args.server, timeout=args.timeout, root_cert=args.root_cert, token=_token(args)
        )
    except OSError as error:
        return _fail("generate", f"{error.filename}: {error.strerror}")
    try:
        with client:
            return _GENERATORS[args.kind](client, args)
    except ModelServerError as error:
        return _fail("generate", str(error), 1)
    except (OSError, ValueError, TypeError) as error:
        return _fail("generate", str(error))


def _generate_text(client, args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    first = _seed(args)
    generations = client.generate_text(
        [args.prompt] * args.n,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=list(range(first, first + args.n)),
        **({"model": args.model} if args.model else {}),
    )
    texts = [g.text for g in generations]
    print("\n\n".join(texts))
    _report_seed(args)
    if args.output:
        Path(args.output).write_text("\n\n".join(texts) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _generate_grid(client, args: argparse.Namespace) -> int:
    from serving.images import grid

    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    first = _seed(args)
    seeds = list(range(first, first + args.n))
    extra = {"model": args.model} if args.model else {}
    if args.kind == "digits":
        images = client.vae_sample(seeds, **extra)
    else:
        images = client.gan_generate(seeds, **extra)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(grid(images, args.columns))
    print(f"wrote {output}: {len(images)} {args.kind} (model version {images[0].version})")
    _report_seed(args)
    return 0


def _generate_dream(client, args: argparse.Namespace) -> int:
    image = client.dream(
        Path(args.image),
        iterations=args.iterations,
        octaves=args.octaves,
        octave_scale=args.octave_scale,
        step=args.step,
        max_loss=args.max_loss,
        **({"model": args.model} if args.model else {}),
    )
    print(f"wrote {image.save(args.output)} (model version {image.version})")
    return 0


def _generate_style(client, args: argparse.Namespace) -> int:
    if args.fast:
        if args.style:
            raise ValueError("give a STYLE image or --fast STYLE_NAME, not both")
        image = client.fast_style(Path(args.content), args.fast)
    elif not args.style:
        raise ValueError("give a STYLE image (or --fast STYLE_NAME for a trained fast style)")
    else:
        result = client.style_transfer(
            Path(args.content),
            Path(args.style),
            iterations=args.iterations,
            height=args.height,
            content_weight=args.content_weight,
            style_weight=args.style_weight,
            tv_weight=args.tv_weight,
            **({"model": args.model} if args.model else {}),
        )
        image = result.image
        print(f"loss {result.loss:.4g}", file=sys.stderr)
    print(f"wrote {image.save(args.output)} (model version {image.version})")
    return 0


_GENERATORS = {
    "text": _generate_text,
    "digits": _generate_grid,
    "faces": _generate_grid,
    "dream": _generate_dream,
    "style": _generate_style,
}


# -- entry points ------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve`, `serving-config` and `generate` to a ``genpipe`` subparsers object.

    Each subcommand sets ``handler``: a function of the parsed args returning the exit code.
    """
    register_serve(subparsers)
    register_serving_config(subparsers)
    register_generate(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving``: the serving subcommands on their own."""
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)
