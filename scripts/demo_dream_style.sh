#!/usr/bin/env bash
# DeepDream, Gatys style transfer and the fast style network on the demo profile (called by
# scripts/demo.sh with ROOT): run the three TFX pipelines (ImageNet weights -> export or train ->
# validate -> push), then ask the pushed SavedModels, loaded as TF Serving loads them (the model
# server's loader: Session, saver_def, SignatureDef names), for out/dream.png, out/style.png and
# out/fast_style_starry_night.png.
# GENPIPE_DEMO_FAST_STYLE=0 skips the fast style network (about 3 minutes of training).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3
GENPIPE=.venv/bin/genpipe
ROOT="${ROOT:-runs/demo}"
mkdir -p out "$ROOT"
started=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - started ))s] $*"; }

step "dream: InceptionV3 (ImageNet) -> deepdream SavedModel -> validate -> push"
$GENPIPE run dream --profile demo --root "$ROOT"
step "style: VGG19 (ImageNet) -> style_transfer SavedModel -> validate -> push"
$GENPIPE run style --profile demo --root "$ROOT"
if [ "${GENPIPE_DEMO_FAST_STYLE:-1}" = 1 ]; then
  step "fast-style: content photos -> Trainer (VGG19 perceptual loss) -> validate -> push"
  $GENPIPE run fast-style --profile demo --style starry_night --root "$ROOT"
fi

step "out/dream.png and out/style.png from the pushed SavedModels"
.venv/bin/python - "$ROOT/serving" <<'PY'
import sys
import time
from pathlib import Path

import tensorflow as tf

from components.push import latest_version
from contracts import deepdream, style_transfer
from serving.servable import load_servable
from sources import photos

serving = Path(sys.argv[1])


def load(model: str):
    version = latest_version(str(serving / model))
    if version is None:
        raise SystemExit(f"no pushed version under {serving / model}; run the pipeline first")
    print(f"  {model}: version {version}")
    return load_servable(model, int(version), str(serving / model / version))


def png(image) -> list[bytes]:
    return [tf.io.encode_png(image).numpy()]


def write(path: str, outputs: dict, started: float) -> None:
    Path(path).write_bytes(outputs["image_bytes"][0])
    shape = tf.io.decode_png(outputs["image_bytes"][0]).shape
    print(f"  wrote {path} ({shape[0]}x{shape[1]}) in {time.monotonic() - started:.0f} s")


# DeepDream, the chapter's settings except the photo's size: 3 octaves x1.4, steps of 20,
# max loss 15, 20 steps per octave on the 300x451 cat.
started = time.monotonic()
request = {**deepdream.DREAM.defaults(), "iterations": 20}
outputs = load("deepdream").run(
    "dream", {"image": png(photos.photo("chelsea")), **{k: [v] for k, v in request.items()}}
)
write("out/dream.png", outputs, started)

# Gatys: the chapter's loss weights, 150 SGD iterations at height 192 (the book: 4000 at 400).
started = time.monotonic()
style_image = photos.painting("starry_night")  # a skimage texture if the painting is absent
request = {**style_transfer.TRANSFER.defaults(), "iterations": 150, "height": 192}
outputs = load("style_transfer").run(
    "transfer",
    {"content": png(photos.photo("chelsea")), "style": png(style_image),
     **{k: [v] for k, v in request.items()}},
)
print(f"  style transfer loss {float(outputs['loss'][0]):.4g}")
write("out/style.png", outputs, started)

fast = sorted(p.name for p in serving.glob("fast_style_*") if p.is_dir())
for model in fast:
    started = time.monotonic()
    outputs = load(model).run("stylize", {"image": png(photos.photo("chelsea"))})
    write(f"out/{model}.png", outputs, started)
PY
step "done: out/dream.png, out/style.png, out/fast_style_*.png"
