#!/usr/bin/env bash
# DeepDream, Gatys style transfer and the fast style network on the demo profile (called by
# scripts/demo.sh with ROOT): run the three TFX pipelines (ImageNet weights -> export or train ->
# validate -> push), then ask the pushed SavedModels, loaded with tf.saved_model.load as a server
# loads them, for out/dream.png, out/style.png and out/fast_style_starry_night.png.
# GENPIPE_DEMO_FAST_STYLE=0 skips the fast style network (about 3 minutes of training).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
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
from sources import photos

serving = Path(sys.argv[1])


def load(model: str):
    version = latest_version(str(serving / model))
    if version is None:
        raise SystemExit(f"no pushed version under {serving / model}; run the pipeline first")
    print(f"  {model}: version {version}")
    return tf.saved_model.load(str(serving / model / version))


def png(image) -> tf.Tensor:
    return tf.constant([tf.io.encode_png(image).numpy()])


def write(path: str, outputs: dict, started: float) -> None:
    Path(path).write_bytes(outputs["image"].numpy()[0])
    shape = tf.io.decode_png(outputs["image"][0]).shape
    print(f"  wrote {path} ({shape[0]}x{shape[1]}) in {time.monotonic() - started:.0f} s")


# DeepDream, the chapter's settings except the photo's size: 3 octaves x1.4, steps of 20,
# max loss 15, 20 steps per octave on the 300x451 cat.
started = time.monotonic()
dream = load("deepdream").signatures["dream"]
outputs = dream(image=png(photos.photo("chelsea")), iterations=tf.constant([20]),
                octaves=tf.constant([3]), octave_scale=tf.constant([1.4]),
                step=tf.constant([20.0]), max_loss=tf.constant([15.0]))
write("out/dream.png", outputs, started)

# Gatys: the chapter's loss weights, 150 SGD iterations at height 192 (the book: 4000 at 400).
started = time.monotonic()
style_image = photos.painting("starry_night")  # a skimage texture if the painting is absent
transfer = load("style_transfer").signatures["transfer"]
outputs = transfer(content=png(photos.photo("chelsea")), style=png(style_image),
                   iterations=tf.constant([150]), height=tf.constant([192]),
                   content_weight=tf.constant([2.5e-8]), style_weight=tf.constant([1e-6]),
                   tv_weight=tf.constant([1e-6]))
print(f"  style transfer loss {float(outputs['loss'][0]):.4g}")
write("out/style.png", outputs, started)

fast = sorted(p.name for p in serving.glob("fast_style_*") if p.is_dir())
for model in fast:
    started = time.monotonic()
    stylize = load(model).signatures["stylize"]
    write(f"out/{model}.png", stylize(image=png(photos.photo("chelsea"))), started)
PY
step "done: out/dream.png, out/style.png, out/fast_style_*.png"
