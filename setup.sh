#!/usr/bin/env bash
# First command for a new user: install dependencies, build, run the main job (a demo on a small model).
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
scripts/build.sh
exec scripts/demo.sh
