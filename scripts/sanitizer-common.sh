# Sourced by scripts/ci-sanitizers.sh and scripts/ci-fuzz.sh: the sanitizer build folder and the
# runtime options. Not a command of its own.
#
# One build folder serves both stages: clang, AddressSanitizer + UndefinedBehaviorSanitizer on
# every target (-DMAMBAVL_FUZZ=ON implies -DMAMBAVL_SANITIZE=ON) plus libFuzzer's coverage hooks,
# -O1 with line tables only (stack traces with file:line, small objects, fast links). The tests
# and the CLI built there are the sanitizer run's; the harnesses in fuzz/ link the same library.
# ccache is used as in build/ (CMakeLists.txt).

MVL_ASAN_BUILD_DIR=${MAMBAVL_ASAN_BUILD_DIR:-build-asan}
MVL_JOBS=${MAMBAVL_JOBS:-$(nproc)}

# Configures the folder once (a later run only builds).
mvl_configure_asan() {
  if [ -f "$MVL_ASAN_BUILD_DIR/build.ninja" ]; then return 0; fi
  local cxx=${MAMBAVL_ASAN_CXX:-clang++}
  if ! command -v "$cxx" >/dev/null; then
    echo "error: $cxx not found (the sanitizer / fuzz build needs clang and libFuzzer: run" \
         "scripts/install-deps.sh)" >&2
    return 1
  fi
  local torch_cmake
  torch_cmake=$(.venv/bin/python -c "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('torch').origin), 'share', 'cmake'))")
  cmake -S . -B "$MVL_ASAN_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only -DNDEBUG" \
    -DCMAKE_CXX_COMPILER="$cxx" -DMAMBAVL_FUZZ=ON -DCMAKE_PREFIX_PATH="$torch_cmake" \
    ${MAMBAVL_ASAN_CMAKE_ARGS:-}
}

# Runtime options. Every finding is fatal (halt_on_error; UBSan is compiled without recovery) and
# printed with its stack. LeakSanitizer stays on: no report so far (LibTorch keeps its static state
# reachable); suppressions would go to scripts/sanitizer-suppressions/lsan.supp, each with why.
# There is no UBSan suppression file: with -fno-sanitize-recover a suppressed check still aborts,
# so a false positive in someone else's code is handled at compile time for that file and that
# check only (as fuzz/CMakeLists.txt does for stb_image's nonnull-attribute). `MVL_SAN_LOG` (when
# set) sends every report to files there instead of stderr, so a report from a child process (the
# CLI tests run `mambavl`) cannot hide behind an expected non-zero exit code: the caller fails
# when the folder is not empty.
mvl_sanitizer_env() {
  local sup
  sup=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/sanitizer-suppressions
  local log=""
  [ -n "${MVL_SAN_LOG:-}" ] && log=":log_path=$MVL_SAN_LOG/report"
  export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:print_summary=1:symbolize=1${log}${ASAN_EXTRA_OPTIONS:+:$ASAN_EXTRA_OPTIONS}"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:report_error_type=1${log}"
  export LSAN_OPTIONS="suppressions=$sup/lsan.supp:print_suppressions=0"
  command -v llvm-symbolizer >/dev/null && export ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer)
  return 0
}
