#!/usr/bin/env bash
# The main job on the offline defaults (`make demo`): train or export every built model on the
# `demo` profile, serve the pushed versions, ask the server for generations over gRPC and write
# them under out/. Set GENPIPE_DEMO_ROOT to move the run folder (default runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3
GENPIPE=.venv/bin/genpipe
ROOT="${GENPIPE_DEMO_ROOT:-runs/demo}"
export GENPIPE_DEMO_ROOT="$ROOT"
PORT="${GENPIPE_DEMO_PORT:-8500}"
SERVER="127.0.0.1:$PORT"
mkdir -p out "$ROOT"
started=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - started ))s] $*"; }

step "offline assets"
$GENPIPE assets

step "text: reviews -> Transformer LM (demo profile; the offline corpus is NOT IMDB)"
$GENPIPE run text --profile demo --root "$ROOT"
step "images: VAE and DCGAN on MNIST"
bash scripts/demo_images.sh
step "DeepDream and style transfer from ImageNet weights"
ROOT="$ROOT" bash scripts/demo_dream_style.sh

step "serving $ROOT/serving on $SERVER"
$GENPIPE serve --models_root "$ROOT/serving" --port "$PORT" --rest_api_port 0 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT
step "samples from the served models over gRPC (scripts/demo_samples.py)"
.venv/bin/python scripts/demo_samples.py --server "$SERVER" --models_root "$ROOT/serving" --out out
step "a streamed generation: words print as the server decodes them"
$GENPIPE generate text "this movie" --server "$SERVER" --stream --temperature 0.7 \
  --max-tokens 30 --seed 1

step "model versions"
$GENPIPE status --root "$ROOT" --server "$SERVER"
step "the report: out/report/index.html (versions, metrics, samples, gates, lineage)"
$GENPIPE report --root "$ROOT" --server "$SERVER" --out out/report
step "done: samples are under out/"
ls -l out
