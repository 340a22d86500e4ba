#!/usr/bin/env bash
# The README's two commands:
#   scripts/dev.sh sandbox [ferry sandbox flags]   install, build, run `ferry sandbox`
#   scripts/dev.sh test                            install, build, run the whole test suite
set -euo pipefail
cd "$(dirname "$0")/.."

cmd="${1:-}"
shift || true
case "$cmd" in
  sandbox|test) ;;
  *) echo "usage: scripts/dev.sh sandbox|test [args]" >&2; exit 2 ;;
esac

bash scripts/install-deps.sh
BUILD="${FERRY_BUILD_DIR:-build}"
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
ninja -C "$BUILD" -j2

if [ "$cmd" = sandbox ]; then
  exec "$BUILD/tools/ferry" sandbox "$@"
fi

# Unit tests in parallel; integration tests (real PostgreSQL servers, pgbench) one at a time.
status=0
ctest --test-dir "$BUILD" -L unit -j2 --output-on-failure || status=1
ctest --test-dir "$BUILD" -L integration -j1 --output-on-failure || status=1
if [ $status -ne 0 ]; then
  echo "dev.sh test: FAILED" >&2
fi
exit $status
