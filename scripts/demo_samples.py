"""The demo's samples, asked of the running model server over gRPC with the client library.

    .venv/bin/python scripts/demo_samples.py --server 127.0.0.1:8500 --models_root runs/demo/serving

Waits until every model under the root is AVAILABLE on the server, then writes, for each:
text_samples.txt (two samples at each of five temperatures), digits.png and vae_grid.png (VAE
samples; the latent plane), gan_samples.png, dream.png, style.png (Gatys) and
fast_style_<style>.png. One process for all of them: each
`genpipe generate` call would pay the start of a Python process with TensorFlow again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from client import ModelServerClient  # noqa: E402
from client.images import grid  # noqa: E402
from sources import photos  # noqa: E402

PROMPT = "this movie"
TEMPERATURES = (0.2, 0.5, 0.7, 1.0, 1.5)
SEEDS = (1, 2)
# Gatys on the server at the demo's size: 40 SGD iterations at height 160 (the book: 4000 at 400).
STYLE = {"iterations": 40, "height": 160}
# DeepDream: 3 octaves of 10 steps (the signature's default is 30 a octave).
DREAM = {"iterations": 10, "octaves": 3}


def text_samples(client: ModelServerClient, out: Path) -> None:
    lines = []
    for temperature in TEMPERATURES:
        generations = client.generate_text(
            [PROMPT] * len(SEEDS), temperature=temperature, max_tokens=30, seed=list(SEEDS)
        )
        lines.append(f"-- temperature {temperature}")
        lines += [g.text + "\n" for g in generations]
    (out / "text_samples.txt").write_text("\n".join(lines))
    print(f"  wrote {out / 'text_samples.txt'}: {len(SEEDS)} samples at each of {TEMPERATURES}")


def image_samples(client: ModelServerClient, out: Path, models: set[str]) -> None:
    def wrote(name: str, what: str, started: float) -> None:
        print(f"  wrote {out / name}: {what} ({time.monotonic() - started:.1f} s)")

    if "vae" in models:
        started = time.monotonic()
        (out / "digits.png").write_bytes(grid(client.vae_sample(list(range(16))), 4))
        wrote("digits.png", "16 VAE samples", started)
        # The chapter decodes [-1, 1]^2; with the ELBO's full KL term the codes spread like
        # N(0, I), so [-2, 2]^2 shows every digit class.
        started = time.monotonic()
        client.vae_latent_grid(n=30, extent=2.0).save(out / "vae_grid.png")
        wrote("vae_grid.png", "30x30 decoded points of [-2, 2]^2", started)
    if "gan" in models:
        started = time.monotonic()
        (out / "gan_samples.png").write_bytes(grid(client.gan_generate(list(range(64))), 8))
        wrote("gan_samples.png", "generations for seeds 0..63", started)
    if "deepdream" in models:
        started = time.monotonic()
        client.dream(photos.photo("coffee"), **DREAM).save(out / "dream.png")
        wrote("dream.png", f"DeepDream of the coffee photo, {DREAM}", started)
    if "style_transfer" in models:
        started = time.monotonic()
        result = client.style_transfer(
            photos.photo("chelsea"), photos.painting("starry_night"), **STYLE
        )
        result.image.save(out / "style.png")
        wrote("style.png", f"Gatys, {STYLE}, loss {result.loss:.4g}", started)
    for model in sorted(m for m in models if m.startswith("fast_style_")):
        started = time.monotonic()
        style = model.removeprefix("fast_style_")
        client.fast_style(photos.photo("chelsea"), style).save(out / f"{model}.png")
        wrote(f"{model}.png", f"the trained {style} network", started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:8500")
    parser.add_argument("--out", default="out", type=Path)
    parser.add_argument("--models_root", required=True, type=Path, help="the served root")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = {p.name for p in args.models_root.iterdir() if p.is_dir()}
    with ModelServerClient(args.server, timeout=600) as client:
        for model in sorted(models):
            version = client.wait_until_available(model, timeout=600)
            print(f"  {model} version {version} is AVAILABLE")
        if "text_lm" in models:
            text_samples(client, args.out)
        image_samples(client, args.out, models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
