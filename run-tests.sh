#!/usr/bin/env bash
# Second command: install dependencies if needed, build, run the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
scripts/build.sh
cd "${MAMBAVL_BUILD_DIR:-build}"
exec ctest --output-on-failure -j "${MAMBAVL_JOBS:-$(nproc)}" "$@"
