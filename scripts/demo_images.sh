#!/usr/bin/env bash
# The VAE and the DCGAN on the demo profile (offline MNIST). Called by scripts/demo.sh, which
# asks the served models for their pictures (scripts/demo_samples.py); GENPIPE_DEMO_ROOT
# overrides the root (default runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
GENPIPE=.venv/bin/genpipe
ROOT="${GENPIPE_DEMO_ROOT:-runs/demo}"
mkdir -p out "$ROOT"

echo "== VAE (DLwP 12.4) on MNIST, demo profile"
$GENPIPE run vae --profile demo --dataset mnist --root "$ROOT"
echo "== DCGAN (DLwP 12.5) on MNIST, demo profile"
$GENPIPE run gan --profile demo --dataset mnist --root "$ROOT"

