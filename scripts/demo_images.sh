#!/usr/bin/env bash
# The VAE and the DCGAN on the demo profile (offline MNIST), then pictures from the pushed
# SavedModels: out/vae_grid.png (the `latent_grid` signature: digits morphing across the 2-D
# latent plane, [-2, 2]^2) and out/gan_samples.png (64 `generate` calls, seeds 0..63, as an 8x8 grid).
# Called by scripts/demo.sh; GENPIPE_DEMO_ROOT overrides the root (default runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
GENPIPE=.venv/bin/genpipe
ROOT="${GENPIPE_DEMO_ROOT:-runs/demo}"
mkdir -p out "$ROOT"

echo "== VAE (DLwP 12.4) on MNIST, demo profile"
$GENPIPE run vae --profile demo --dataset mnist --root "$ROOT"
echo "== DCGAN (DLwP 12.5) on MNIST, demo profile"
$GENPIPE run gan --profile demo --dataset mnist --root "$ROOT"

echo "== pictures from the pushed SavedModels"
TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python - "$ROOT/serving" out <<'PYTHON'
import sys
from pathlib import Path

import tensorflow as tf

from models import image_grid
from serving.servable import load_servable

serving, out = Path(sys.argv[1]), Path(sys.argv[2])


def latest(model: str):
    versions = [p for p in (serving / model).iterdir() if p.name.isdigit()]
    if not versions:
        sys.exit(f"no pushed {model} version under {serving / model}: was it blessed?")
    path = max(versions, key=lambda p: int(p.name))
    return path, load_servable(model, int(path.name), str(path))  # as TF Serving loads it


path, vae = latest("vae")
# The chapter decodes [-1, 1]^2; with the ELBO's full KL term the codes spread like N(0, I), so
# [-2, 2]^2 shows every digit class.
grid = vae.run("latent_grid", {"n": [30], "extent": [2.0]})
(out / "vae_grid.png").write_bytes(grid["png_bytes"][0])
print(f"wrote {out / 'vae_grid.png'}: 30x30 decoded points of [-2, 2]^2 from {path}")

path, gan = latest("gan")
images = gan.run("generate", {"seed": list(range(64))})["images"]
image_grid.save_png(out / "gan_samples.png", image_grid.grid(tf.cast(images, tf.float32) / 255.0))
print(f"wrote {out / 'gan_samples.png'}: generations for seeds 0..63 from {path}")
PYTHON
