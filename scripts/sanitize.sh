#!/usr/bin/env bash
# The hostile-input stage of `scripts/dev.sh test`: builds ferry with clang under
# AddressSanitizer and UndefinedBehaviorSanitizer (in build-asan/), runs the unit tests there,
# then each libFuzzer target in tests/fuzz for FERRY_FUZZ_SECONDS (default 30) starting from its
# seed corpus. Any crash, leak or sanitizer report fails the script; the input that caused it is
# saved under build-asan/fuzz-artifacts/ (keep it in tests/fuzz/corpus/<target>/ once fixed).
# FERRY_SANITIZE_BUILD_DIR overrides the build directory.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD="${FERRY_SANITIZE_BUILD_DIR:-build-asan}"
SECONDS_PER_TARGET="${FERRY_FUZZ_SECONDS:-30}"
TARGETS=(wal_decoder pgoutput resp segment manifest config)

if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFERRY_SANITIZE=ON -DFERRY_FUZZ=ON
fi
ninja -C "$BUILD" -j2 ferry_unit_tests fuzz_targets

# halt_on_error: the first report fails the run. Leaks are reported at exit (LeakSanitizer).
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$PWD/scripts/ubsan.supp"

status=0
echo "sanitize: unit tests under ASan+UBSan"
ctest --test-dir "$BUILD" -L unit -j2 --output-on-failure --no-tests=error || status=1

artifacts="$BUILD/fuzz-artifacts"
mkdir -p "$artifacts"
for t in "${TARGETS[@]}"; do
  # New inputs the fuzzer finds go to a scratch directory; the committed corpus is only read.
  scratch="$(mktemp -d)"
  echo "sanitize: fuzz_$t for ${SECONDS_PER_TARGET}s"
  if ! "$BUILD/tests/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/$t-" "$scratch" "tests/fuzz/corpus/$t" \
      >"$artifacts/$t.log" 2>&1; then
    echo "sanitize: fuzz_$t FAILED; its log: $artifacts/$t.log, the input: $(ls -t "$artifacts/$t-"* 2>/dev/null | head -1)" >&2
    tail -40 "$artifacts/$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|cov: " "$artifacts/$t.log" | tail -2 | sed "s/^/  fuzz_$t: /"
  fi
  rm -rf "$scratch"
done
exit $status
