#!/usr/bin/env bash
# Debian extras (README, "Where the data comes from offline"): Fashion-MNIST (plain install, no dependencies) and two paintings
# extracted from .debs without installing them (their Depends pull OpenCV); Chromium, which the
# report test renders `genpipe report` in (tests/test_report.py).
# Never fatal: where apt is unavailable it prints one notice and genpipe falls back to other data.
set -u
ASSETS="${GENPIPE_ASSETS:-$(cd "$(dirname "$0")/.." && pwd)/.assets}"
PAINTINGS="$ASSETS/paintings"
PHOTOS="$ASSETS/photos"
mkdir -p "$PAINTINGS" "$PHOTOS"

notice() { echo "setup-extras: $*" >&2; }

if ! command -v apt-get >/dev/null 2>&1; then
  notice "apt-get not available: skipping Fashion-MNIST, the Starry Night/Scream paintings (genpipe falls back to MNIST and skimage textures) and Chromium (the report test skips)"
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"

have_all() {
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] &&
    [ -f "$PAINTINGS/starry_night.jpg" ] && [ -f "$PAINTINGS/scream.jpg" ] &&
    command -v chromium >/dev/null 2>&1
}
if have_all; then exit 0; fi

if ! $SUDO apt-get update -qq >/dev/null 2>&1; then
  notice "apt-get update failed (no root or no network): skipping the Debian extras"
  exit 0
fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || notice "could not install dataset-fashion-mnist: Fashion-MNIST unavailable"
fi

if ! command -v chromium >/dev/null 2>&1; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || notice "could not install chromium: the report's browser test skips (and fails on CI)"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ ! -f "$PAINTINGS/scream.jpg" ]; then
  if (cd "$work" && apt-get download darknet >/dev/null 2>&1); then
    dpkg-deb -x "$work"/darknet_*.deb "$work/darknet"
    cp "$work/darknet/usr/share/darknet/data/scream.jpg" "$PAINTINGS/scream.jpg"
    for photo in dog eagle giraffe horses person kite; do
      cp "$work/darknet/usr/share/darknet/data/$photo.jpg" "$PHOTOS/$photo.jpg" 2>/dev/null || true
    done
  else
    notice "could not download darknet: The Scream unavailable"
  fi
fi
if [ ! -f "$PAINTINGS/starry_night.jpg" ]; then
  if (cd "$work" && apt-get download opencv-doc >/dev/null 2>&1); then
    data=./usr/share/doc/opencv-doc/examples/data
    dpkg-deb --fsys-tarfile "$work"/opencv-doc_*.deb | tar -x -C "$work" "$data/starry_night.jpg"
    cp "$work/$data/starry_night.jpg" "$PAINTINGS/starry_night.jpg"
  else
    notice "could not download opencv-doc: Starry Night unavailable"
  fi
fi
exit 0
