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
.venv/bin/python - "$SERVER" "$ROOT/serving" <<'PY'
import sys
from pathlib import Path
from client import ModelServerClient
server, root = sys.argv[1], Path(sys.argv[2])
with ModelServerClient(server, timeout=10) as client:
    for model in sorted(p.name for p in root.iterdir() if p.is_dir()):
        version = client.wait_until_available(model, timeout=600)
        print(f"  {model} version {version} is AVAILABLE")
PY

step "text samples from the served model over gRPC (prompt 'this movie')"
: > out/text_samples.txt
for t in 0.2 0.5 0.7 1.0 1.5; do
  echo "-- temperature $t" | tee -a out/text_samples.txt
  $GENPIPE generate text "this movie" --server "$SERVER" --temperature "$t" --max-tokens 30 \
    --seed 1 -n 2 | tee -a out/text_samples.txt
done
for kind in digits faces; do
  model=$([ "$kind" = digits ] && echo vae || echo gan)
  if [ -d "$ROOT/serving/$model" ]; then
    file=$([ "$kind" = digits ] && echo out/served_digits.png || echo out/served_gan.png)
    $GENPIPE generate "$kind" -n 16 --seed 1 -o "$file" --server "$SERVER"
  fi
done

if [ -d "$ROOT/serving/deepdream" ]; then
  .venv/bin/python -c "from PIL import Image; from sources.photos import photo; \
Image.fromarray(photo('coffee')).save('out/coffee.jpg', quality=95)"
  $GENPIPE generate dream out/coffee.jpg --iterations 10 --octaves 3 -o out/served_dream.png \
    --server "$SERVER" --timeout 600
fi

if [ -d "$ROOT/serving/fast_style_starry_night" ]; then
  .venv/bin/python -c "from PIL import Image; from sources.photos import photo; \
Image.fromarray(photo('chelsea')).save('out/chelsea.jpg', quality=95)"
  $GENPIPE generate style out/chelsea.jpg --fast starry_night -o out/served_fast_style.png \
    --server "$SERVER"
fi

step "model versions"
$GENPIPE status --root "$ROOT" --server "$SERVER"
step "done: samples are under out/"
ls -l out
