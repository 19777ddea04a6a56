#!/usr/bin/env bash
# Installs everything mambavl needs on a fresh Debian 12 machine; safe to re-run (does nothing when done).
#  - Debian packages: compiler tool chain, CMake, Ninja, ccache, GoogleTest, nlohmann-json, CLI11, stb, tcmalloc,
#    Vega (libjs-vega, inlined into `mambavl report` pages) and Chromium (the report's headless test);
#    clang with its sanitizer / libFuzzer runtimes, libomp and llvm-symbolizer for the sanitizer and
#    fuzzing stages of CI (scripts/ci-sanitizers.sh, scripts/ci-fuzz.sh)
#  - LibTorch: the PyPI `torch` wheel (pinned) in the project-local virtual environment .venv
#    (installed with --no-deps: the C++ engine links libtorch_cpu/libc10 only, so the multi-GB CUDA
#    wheels are not needed; the two small CUDA runtime libraries libtorch_cpu.so is linked against
#    - cudart and cupti - come from the registry's cuda-toolkit package).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.11.0
CUDA_TOOLKIT_VERSION=13.0.2

apt_pkgs=(build-essential cmake ninja-build ccache git python3 python3-venv libgtest-dev libgmock-dev
          nlohmann-json3-dev libcli11-dev libstb-dev libgoogle-perftools-dev libtomlplusplus-dev
          libjs-vega chromium  # Vega: embedded by the build (report); Chromium: the report's test
          clang libclang-rt-14-dev libomp-14-dev llvm)  # ASan/UBSan build + libFuzzer (fuzz/)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "[install-deps] Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

PY=${PYTHON:-python3}
stamp=.venv/.mambavl-torch-$TORCH_VERSION
if [ ! -f "$stamp" ]; then
  echo "[install-deps] LibTorch: torch==$TORCH_VERSION into .venv (about 530 MB)"
  rm -rf .venv
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check "cuda-toolkit[cudart,cupti]==$CUDA_TOOLKIT_VERSION"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "torch==$TORCH_VERSION"
  touch "$stamp"
fi
