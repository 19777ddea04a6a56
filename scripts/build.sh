#!/usr/bin/env bash
# Configures (once) and builds mambavl in build/ (Release). Extra arguments go to cmake --build.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${MAMBAVL_BUILD_DIR:-build}
TORCH_CMAKE=$(.venv/bin/python -c "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('torch').origin), 'share', 'cmake'))")
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" ${MAMBAVL_CMAKE_ARGS:-}
fi
cmake --build "$BUILD_DIR" -j "${MAMBAVL_JOBS:-$(nproc)}" "$@"
