#!/usr/bin/env bash
# CI stage (and the long-run driver): builds the libFuzzer harnesses of fuzz/ (in the sanitizer
# build folder, scripts/sanitizer-common.sh) and runs each for a bounded time, starting from the
# committed seed corpus fuzz/corpus/<harness>/ (read only) plus a work corpus. Any finding fails:
# a crash, a sanitizer report, an exception other than mambavl::Error, a leak, an input slower
# than 10 s or more than 2 GB of memory. The reproducer is left in $FUZZ_OUT/<harness>/ (crash-*,
# leak-*, timeout-*, oom-*) and its log in $FUZZ_OUT/<harness>.log. See fuzz/README.md.
#
#   scripts/ci-fuzz.sh [harness...]       # default: all (fuzz_safetensors fuzz_config ...)
#   FUZZ_SECONDS=3600 FUZZ_CORPUS_DIR=$HOME/mambavl-fuzz scripts/ci-fuzz.sh fuzz_tokenizer
#
# Environment:
#   FUZZ_SECONDS     seconds per harness (45)
#   FUZZ_PARALLEL    harnesses run at once (nproc)
#   FUZZ_JOBS        libFuzzer processes per harness (1); > 1 runs -fork=N (crashes still stop it)
#   FUZZ_CORPUS_DIR  persistent work corpora (<dir>/<harness>/, created, kept, grows); default a
#                    fresh temporary folder, removed at the end
#   FUZZ_OUT         logs and reproducers (fuzz-out, emptied first)
#   FUZZ_ARGS        extra libFuzzer arguments (e.g. -use_value_profile=1)
#   FUZZ_NO_BUILD=1  use the harnesses as built
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/sanitizer-common.sh

ALL=(fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_image fuzz_llava)
HARNESSES=("$@")
[ ${#HARNESSES[@]} -eq 0 ] && HARNESSES=("${ALL[@]}")
for h in "${HARNESSES[@]}"; do
  [[ " ${ALL[*]} " == *" $h "* ]] || { echo "error: unknown harness '$h' (known: ${ALL[*]})" >&2; exit 2; }
done
SECONDS_EACH=${FUZZ_SECONDS:-45}
PARALLEL=${FUZZ_PARALLEL:-$(nproc)}
JOBS=${FUZZ_JOBS:-1}
OUT=${FUZZ_OUT:-fuzz-out}
dict_of() {
  case $1 in
    fuzz_safetensors) echo fuzz/dict/safetensors.dict ;;
    fuzz_config) echo fuzz/dict/config.dict ;;
    fuzz_tokenizer) echo fuzz/dict/tokenizer.dict ;;
    fuzz_image) echo fuzz/dict/image.dict ;;
    fuzz_llava) echo fuzz/dict/llava.dict ;;
  esac
}

t0=$(date +%s)
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  mvl_configure_asan
  cmake --build "$MVL_ASAN_BUILD_DIR" -j "$MVL_JOBS" --target "${HARNESSES[@]}"
fi
t1=$(date +%s)
echo "[ci-fuzz] build: $((t1 - t0)) s"

rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -n "${FUZZ_CORPUS_DIR:-}" ]; then
  WORK=$FUZZ_CORPUS_DIR
  mkdir -p "$WORK"
  WORK=$(cd "$WORK" && pwd)
  TEMP_WORK=""
else
  TEMP_WORK=$(mktemp -d "${TMPDIR:-/tmp}/mambavl-fuzz-corpus.XXXXXX")
  WORK=$TEMP_WORK
fi
mvl_sanitizer_env  # no MVL_SAN_LOG: libFuzzer prints the report into the harness's log

run_one() {
  local h=$1 exe dict
  exe=$(cd "$MVL_ASAN_BUILD_DIR" && pwd)/fuzz/$h  # the build folder may be relative or absolute
  dict=$(pwd)/$(dict_of "$h")
  mkdir -p "$OUT/$h" "$WORK/$h"
  local par=()
  [ "$JOBS" -gt 1 ] && par=(-fork="$JOBS")
  # -timeout: one input; -rss_limit_mb / -malloc_limit_mb: the whole process / one allocation.
  # shellcheck disable=SC2086
  "$exe" "$WORK/$h" "$(pwd)/fuzz/corpus/$h" -dict="$dict" -max_total_time="$SECONDS_EACH" \
    -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$OUT/$h/" "${par[@]}" ${FUZZ_ARGS:-} >"$OUT/$h.log" 2>&1
}

pids=()
names=()
status=0
for h in "${HARNESSES[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 1; done
  run_one "$h" &
  pids+=($!)
  names+=("$h")
done
declare -A rc
for i in "${!pids[@]}"; do
  r=0
  wait "${pids[$i]}" || r=$?
  rc[${names[$i]}]=$r
done
t2=$(date +%s)

printf '[ci-fuzz] %-17s %12s %9s %8s %7s  %s\n' harness executions exec/s corpus cov result
for h in "${HARNESSES[@]}"; do
  log=$OUT/$h.log
  # Plain mode ends with stat:: lines and "#N DONE ... exec/s: R"; -fork mode prints
  # "#N: cov: C ft: F corp: K exec/s R ...". Missing figures print as "?".
  execs=$( (grep -o 'stat::number_of_executed_units: [0-9]*' "$log" || grep -o '^#[0-9]*:' "$log" ||
            true) | tail -1 | tr -dc '0-9')
  rate=$( (grep -o 'exec/s:\{0,1\} [0-9]*' "$log" || true) | tail -1 | awk '{print $2}')
  cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | awk '{print $2}')
  files=$(find "$WORK/$h" -type f | wc -l)
  found=$(find "$OUT/$h" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
            -o -name 'oom-*' \) | sort)
  result=ok
  if [ "${rc[$h]}" -ne 0 ] || [ -n "$found" ]; then
    result="FINDING (exit ${rc[$h]})"
    status=1
  fi
  printf '[ci-fuzz] %-17s %12s %9s %8s %7s  %s\n' "$h" "${execs:-?}" "${rate:-?}" "$files" \
    "${cov:-?}" "$result"
  if [ "$result" != ok ]; then
    for f in $found; do echo "[ci-fuzz]   reproducer: $f"; done
    echo "[ci-fuzz]   log: $log (last 60 lines below)"
    tail -n 60 "$log" | sed 's/^/    /'
  fi
done
echo "[ci-fuzz] fuzzing: $((t2 - t1)) s (${SECONDS_EACH} s per harness, $PARALLEL at once)"
[ -n "$TEMP_WORK" ] && rm -rf "$TEMP_WORK"
if [ "$status" -ne 0 ]; then
  echo "[ci-fuzz] FAILED: reproduce with $MVL_ASAN_BUILD_DIR/fuzz/<harness> <reproducer>" >&2
  exit 1
fi
echo "[ci-fuzz] passed: no findings"
