#!/usr/bin/env bash
# DeepDream, Gatys style transfer and the fast style network on the demo profile (called by
# scripts/demo.sh with ROOT, which then asks the served models for pictures): run the three TFX
# pipelines (ImageNet weights -> export or train -> validate -> push).
# GENPIPE_DEMO_FAST_STYLE=0 skips the fast style network (about 2 minutes of training).
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

