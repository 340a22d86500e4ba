#!/usr/bin/env bash
# The README's two commands:
#   scripts/dev.sh sandbox [ferry sandbox flags]   install, build, run `ferry sandbox`
#   scripts/dev.sh test                            install, build, run unit then integration tests,
#                                                  then scripts/sanitize.sh (ASan/UBSan, fuzzing)
# and the benchmarks:
#   scripts/dev.sh bench                           install, build, run the micro benchmarks and
#                                                  every end-to-end harness (ferry and the peers),
#                                                  tables, CSVs and PNG plots in bench/results/
# FERRY_BUILD_DIR overrides the build directory (default: build).
set -euo pipefail
cd "$(dirname "$0")/.."

cmd="${1:-}"
shift || true
case "$cmd" in
  sandbox|test|bench) ;;
  *) echo "usage: scripts/dev.sh sandbox|test|bench [args]" >&2; exit 2 ;;
esac

bash scripts/install-deps.sh

BUILD="${FERRY_BUILD_DIR:-build}"
if [ ! -f "$BUILD/build.ninja" ]; then
  if [ -f "$BUILD/CMakeCache.txt" ]; then
    echo "dev.sh: $BUILD was configured with another generator; remove it or set FERRY_BUILD_DIR" >&2
    exit 1
  fi
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
ninja -C "$BUILD" -j2

if [ "$cmd" = sandbox ]; then
  exec "$BUILD/tools/ferry" sandbox "$@"
fi

if [ "$cmd" = bench ]; then
  # Each harness starts its own servers and measures ferry and its peers in one run; sizes
  # are the defaults documented in docs/benchmarks.md (about 15 minutes on 2 cores in all). One that
  # fails does not stop the others; the charts are drawn from whatever finished.
  out=bench/results
  mkdir -p "$out"
  failed=()
  "$BUILD/bench/ferry_bench" --benchmark_min_time=0.3 --benchmark_out="$out/micro.json" \
    --benchmark_out_format=json || failed+=(micro)
  for b in physical redis logical disk restore kafka_lag incremental backup; do
    echo "dev.sh: ferry_bench_$b"
    "$BUILD/bench/ferry_bench_$b" --out "$out" || failed+=("$b")
  done
  bash bench/plot.sh "$out" || failed+=(plot)
  if [ ${#failed[@]} -gt 0 ]; then
    echo "dev.sh bench: failed: ${failed[*]} (the rest is in $out)" >&2
    exit 1
  fi
  echo "dev.sh bench: tables, CSVs and charts in $out"
  exit 0
fi

# Unit tests in parallel; integration tests (real PostgreSQL servers, pgbench) one at a time
# because they are CPU-heavy. Both always run; either failing fails the script.
summary=()
run_ctest() {
  local label=$1 jobs=$2 log rc
  log="$(mktemp)"
  echo "dev.sh: ctest -L $label -j$jobs"
  set +e
  ctest --test-dir "$BUILD" -L "$label" -j"$jobs" --output-on-failure --no-tests=error 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  # ctest's own summary: "N% tests passed, M tests failed out of K", the time, failed names.
  summary+=("== $label (exit $rc)")
  mapfile -t -O "${#summary[@]}" summary < <(
    grep -E 'tests passed|tests failed|No tests were found|Total Test time|^[[:space:]]+[0-9]+ - ' "$log" || true)
  rm -f "$log"
  return "$rc"
}

status=0
run_ctest unit 2 || status=1
run_ctest integration 1 || status=1

# Hostile input: the unit tests again under ASan+UBSan, and every fuzz target for a bounded
# time from its seed corpus (scripts/sanitize.sh; a clang build of its own in build-asan/).
echo "dev.sh: scripts/sanitize.sh"
set +e
bash scripts/sanitize.sh
rc=$?
set -e
summary+=("== sanitize: ASan+UBSan unit tests and fuzz targets (exit $rc)")
[ $rc -eq 0 ] || status=1

echo
echo "dev.sh test summary:"
printf '  %s\n' "${summary[@]}"
if [ $status -ne 0 ]; then
  echo "dev.sh test: FAILED" >&2
else
  echo "dev.sh test: passed"
fi
exit $status
