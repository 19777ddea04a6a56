#!/usr/bin/env bash
# CI stage: the test suites that read files and command lines, under AddressSanitizer +
# UndefinedBehaviorSanitizer (+ LeakSanitizer). Builds build-asan (scripts/sanitizer-common.sh:
# clang, -O1, shared with scripts/ci-fuzz.sh) with only the targets these suites need, then runs
# them with CTest. Any sanitizer report fails the stage, also one from a `mambavl` child process
# of a CLI test whose exit code the test expected to be non-zero: reports go to files in
# $MVL_SAN_LOG, which must be empty at the end (they are printed).
#
#   scripts/ci-sanitizers.sh [extra ctest arguments]
#
# Environment: MAMBAVL_ASAN_BUILD_DIR (build-asan), MAMBAVL_JOBS (nproc), MAMBAVL_ASAN_SUITES
# (the test executables; default below), ASAN_EXTRA_OPTIONS (appended to ASAN_OPTIONS).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/sanitizer-common.sh

# Parsers (safetensors, checkpoint folders), tokenizer, images, configs (model folders and the
# registries, TOML run files), VL data files, the CLI suites and every hostile-input suite
# (tests/test_robust_*.cpp). Names without a tests/<name>.cpp are skipped.
DEFAULT_SUITES="test_safetensors test_checkpoint test_tokenizer test_image test_image_dataset
  test_toml_config test_mamba_model test_gpt_neox test_hybrid test_vit test_mambaout
  test_connector test_vlm test_vl_data test_common test_cli test_cli_data test_cli_encode
  test_cli_vision test_cli_vlm $(cd tests && ls test_robust_*.cpp 2>/dev/null | sed 's/\.cpp$//')"
SUITES=""
for s in ${MAMBAVL_ASAN_SUITES:-$DEFAULT_SUITES}; do
  if [ -f "tests/$s.cpp" ]; then SUITES="$SUITES $s"; else echo "[ci-sanitizers] no tests/$s.cpp: skipped"; fi
done
SUITES=${SUITES# }

t0=$(date +%s)
mvl_configure_asan
# shellcheck disable=SC2086
cmake --build "$MVL_ASAN_BUILD_DIR" -j "$MVL_JOBS" --target mambavl $SUITES
t1=$(date +%s)
echo "[ci-sanitizers] build: $((t1 - t0)) s"

export MVL_SAN_LOG
MVL_SAN_LOG=$(mktemp -d "${TMPDIR:-/tmp}/mambavl-sanitizer-reports.XXXXXX")
mvl_sanitizer_env
status=0
# Each suite's tests carry its executable's name as a label (tests/CMakeLists.txt).
(cd "$MVL_ASAN_BUILD_DIR" &&
  ctest --output-on-failure -j "$MVL_JOBS" -L "^(${SUITES// /|})\$" "$@") || status=$?
t2=$(date +%s)
echo "[ci-sanitizers] tests: $((t2 - t1)) s"

reports=$(find "$MVL_SAN_LOG" -type f | sort)
if [ -n "$reports" ]; then
  echo "[ci-sanitizers] sanitizer reports ($(echo "$reports" | wc -l)):"
  for f in $reports; do
    echo "----- $f"
    cat "$f"
  done
  status=1
fi
rm -rf "$MVL_SAN_LOG"
if [ "$status" -ne 0 ]; then
  echo "[ci-sanitizers] FAILED" >&2
  exit "$status"
fi
echo "[ci-sanitizers] passed: no sanitizer reports"
