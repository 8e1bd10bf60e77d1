"""`genpipe generate`: ask a running model server for text, digits, faces, dreams or styled images.

The model controls (temperature, dream steps, style weights...) are the contract's inputs: their
defaults and allowed ranges come from `contracts` and --help shows them. `register(subparsers)`
adds the command to ``genpipe``; ``python -m client`` runs it on its own. TensorFlow is imported
in the handler so --help stays fast; errors are one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from client.inputs import out_of_range
from contracts import Signature, Tensor, deepdream, fast_style, gan, style_transfer, text_lm, vae

SERVER_ENV = "GENPIPE_SERVER"
TOKEN_ENV = "GENPIPE_SERVING_TOKEN"
_CONTRACT = object()  # "use the contract's default"
OUTPUT_HELP = "image to write; the suffix picks the format (default %(default)s)"


def _fail(message: str, code: int = 2) -> int:
    print(f"genpipe generate: error: {message}", file=sys.stderr)
    return code


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
    return common


def _parse(tensor: Tensor) -> Callable[[str], Any]:
    """An argparse type: the flag's number, refused outside the contract's plain bounds."""
    convert = float if tensor.dtype.startswith("float") else int

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number ({tensor.dtype}), got {text!r}"
            ) from None
        why = out_of_range(tensor, value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    return parse


def _control(
    parser: argparse.ArgumentParser,
    tensor: Tensor,
    default: Any = _CONTRACT,
    help_text: str | None = None,
) -> None:
    """A flag for a contract input: type, default and --help text (range) from the contract."""
    flags = ("--" + tensor.name.replace("_", "-"),)
    if len(tensor.name) == 1:
        flags = ("-" + tensor.name, *flags)
    default = tensor.default if default is _CONTRACT else default
    shown = help_text or f"{tensor.doc + '; ' if tensor.doc else ''}default %(default)s"
    parser.add_argument(
        *flags,
        dest=tensor.name,
        type=_parse(tensor),
        default=default,
        metavar=tensor.name.upper(),
        help=f"{shown}; allowed {tensor.range_text()}",
    )


def _controls(parser: argparse.ArgumentParser, signature: Signature, *names: str) -> None:
    """Flags for the named inputs of a signature; the handler passes them on as keywords."""
    for name in names:
        _control(parser, signature.input(name))
    parser.set_defaults(controls=names)


def _kind(kinds: argparse._SubParsersAction, name: str, model: str, **kwargs: Any):
    """One `generate KIND` subcommand, with the connection flags and --model."""
    parser = kinds.add_parser(name, parents=[_connection_options()], **kwargs)
    parser.add_argument("--model", default=model, help="served model name (default %(default)s)")
    parser.set_defaults(handler=generate_command, controls=())
    return parser


def _seed_flag(parser: argparse.ArgumentParser, signature: Signature, what: str) -> None:
    _control(parser, signature.input("seed"), None, f"{what} (default: random)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `generate` (kinds text, digits, faces, latent-grid, dream, style) to ``genpipe``."""
    parser = subparsers.add_parser(
        "generate",
        help="ask a running model server for text, digits, faces, dreams or styled images",
        description="Ask a running model server (`genpipe serve`) for generations. Model "
        "controls default to the serving contract's values (docs/serving.md). A bound named "
        "like max_temperature is a limit fixed at export, which the server checks.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(handler=usage)

    text = _kind(kinds, "text", text_lm.MODEL, help="continue a prompt (text_lm generate)")
    text.add_argument("prompt")
    _controls(text, text_lm.GENERATE, "temperature", "max_tokens", "top_k", "top_p")
    _seed_flag(text, text_lm.GENERATE, "first seed; sample i uses seed + i")
    text.add_argument("-n", "--n", type=int, default=1, help="number of samples")
    text.add_argument("-o", "--output", help="also write the texts to this file")
    text.add_argument(
        "--stream",
        action="store_true",
        help="print the words as they are generated (one sample: -n 1)",
    )

    for kind, model, signature, what in (
        ("digits", vae.MODEL, vae.SAMPLE, "VAE samples (vae sample)"),
        ("faces", gan.MODEL, gan.GENERATE, "GAN samples (gan generate)"),
    ):
        images = _kind(kinds, kind, model, help=f"a grid of {what}")
        images.add_argument("-n", type=int, default=16, help="number of images")
        _seed_flag(images, signature, "first seed")
        images.add_argument("--columns", type=int, default=None, help="grid columns")
        images.add_argument("-o", "--output", default=f"{kind}.png", help="grid PNG to write")

    grid = _kind(kinds, "latent-grid", vae.MODEL, help="the VAE's latent plane (latent_grid)")
    _controls(grid, vae.LATENT_GRID, "n", "extent")
    grid.add_argument("-o", "--output", default="latent_grid.png", help=OUTPUT_HELP)

    dream = _kind(kinds, "dream", deepdream.MODEL, help="DeepDream an image")
    dream.add_argument("image", help="input JPEG/PNG")
    dream.add_argument("-o", "--output", default="dream.png", help=OUTPUT_HELP)
    _controls(dream, deepdream.DREAM, "iterations", "octaves", "octave_scale", "step", "max_loss")

    style = _kind(kinds, "style", style_transfer.MODEL, help="neural style transfer")
    style.add_argument("content", help="content image")
    style.add_argument("style", nargs="?", help="style image (not with --fast)")
    style.add_argument("-o", "--output", default="styled.png", help=OUTPUT_HELP)
    style.add_argument(
        "--fast", metavar="STYLE", help=f"use the trained {fast_style.PREFIX}STYLE model"
    )
    names = ("iterations", "height", "content_weight", "style_weight", "tv_weight")
    _controls(style, style_transfer.TRANSFER, *names)


def token(args: argparse.Namespace) -> str | None:
    """The bearer token of `--token-file`, else of $GENPIPE_SERVING_TOKEN (None: no token)."""
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    return os.environ.get(TOKEN_ENV) or None


def _seeds(args: argparse.Namespace) -> list[int]:
    """Seeds seed..seed+n-1; a random first seed is reported after success, to repeat it."""
    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
        args.random_seed = True
    return list(range(args.seed, args.seed + args.n))


def _report_seed(args: argparse.Namespace) -> None:
    if getattr(args, "random_seed", False):
        print(f"seed {args.seed} (pass --seed {args.seed} to repeat)", file=sys.stderr)


def _values(args: argparse.Namespace) -> dict[str, Any]:
    """The contract inputs given as flags, by input name, and the served model."""
    return {"model": args.model, **{name: getattr(args, name) for name in args.controls}}


def generate_command(args: argparse.Namespace) -> int:
    """Run one `generate KIND`; a down server or a refused request is one line on stderr."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # TF's log level: the entry point
    from client.model_client import ModelServerClient, ModelServerError

    try:
        client = ModelServerClient(
            args.server, timeout=args.timeout, root_cert=args.root_cert, token=token(args)
        )
    except OSError as error:
        return _fail(f"{error.filename}: {error.strerror}")
    try:
        with client:
            return _GENERATORS[args.kind](client, args)
    except ModelServerError as error:
        return _fail(str(error), 1)
    except (OSError, ValueError, TypeError) as error:
        return _fail(str(error))


def _generate_text(client, args: argparse.Namespace) -> int:
    if args.stream and args.n != 1:
        raise ValueError(f"--stream prints one sample as it is generated: use -n 1, not {args.n}")
    seeds = _seeds(args)
    if args.stream:
        texts = [_stream_text(client, args.prompt, seeds[0], _values(args))]
    else:
        generations = client.generate_text([args.prompt] * len(seeds), seed=seeds, **_values(args))
        texts = [g.text for g in generations]
        print("\n\n".join(texts))
    _report_seed(args)
    if args.output:
        Path(args.output).write_text("\n\n".join(texts) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _stream_text(client, prompt: str, seed: int, values: dict[str, Any]) -> str:
    """Print the prompt, then each word as it comes; the whole text, as `generate` writes it."""
    text = prompt.strip()
    print(text, end="", flush=True)
    for word in client.generate_stream(prompt, seed=seed, **values):
        print(" " + word.word, end="", flush=True)
        text += " " + word.word
    print(flush=True)
    return text


def _generate_grid(client, args: argparse.Namespace) -> int:
    from client.images import grid

    seeds = _seeds(args)
    sample = client.vae_sample if args.kind == "digits" else client.gan_generate
    images = sample(seeds, model=args.model)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(grid(images, args.columns))
    print(f"wrote {output}: {len(images)} {args.kind} (model version {images[0].version})")
    _report_seed(args)
    return 0


def _generate_latent_grid(client, args: argparse.Namespace) -> int:
    image = client.vae_latent_grid(**_values(args))
    print(f"wrote {image.save(args.output)} (model version {image.version})")
    return 0


def _generate_dream(client, args: argparse.Namespace) -> int:
    image = client.dream(Path(args.image), **_values(args))
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
        result = client.style_transfer(Path(args.content), Path(args.style), **_values(args))
        image = result.image
        print(f"loss {result.loss:.4g}", file=sys.stderr)
    print(f"wrote {image.save(args.output)} (model version {image.version})")
    return 0


_GENERATORS = {
    "text": _generate_text,
    "digits": _generate_grid,
    "faces": _generate_grid,
    "latent-grid": _generate_latent_grid,
    "dream": _generate_dream,
    "style": _generate_style,
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m client generate ...``: the client's command line on its own."""
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)
