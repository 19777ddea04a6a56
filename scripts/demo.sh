#!/usr/bin/env bash
# The main job: `mambavl demo` runs a compact version of every experiment (SPEC §4) on the built-in
# data - retrieval, coarse-fine, task-aware, resolution, connectors, mambaout, efficiency - with
# two seeds each, prints the papers' claims with this run's numbers and verdicts, and writes the
# HTML report (about 15 minutes on 2 CPU cores). A command-by-command tour of the engine is
# scripts/tour.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${MAMBAVL_DEMO_DIR:-out/demo}
mkdir -p "$(dirname "$OUT")"
exec build/mambavl demo --out "$OUT" "$@"
