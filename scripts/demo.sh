#!/usr/bin/env bash
# The main job (filled in as the CLI grows).
set -euo pipefail
cd "$(dirname "$0")/.."
build/mambavl --help
