#!/usr/bin/env bash
# Installs every Debian 12 package ferry's build, tests and sandbox need. Idempotent: only
# runs apt-get when something is missing. Works without a terminal (CI=true, stdin closed).
set -euo pipefail

PACKAGES=(
  # build
  g++ cmake ninja-build ccache pkg-config
  libpq-dev libhiredis-dev liburing-dev libzstd-dev librdkafka-dev libabsl-dev
  libbenchmark-dev libgtest-dev libgmock-dev libcli11-dev libtomlplusplus-dev
  libspdlog-dev libfmt-dev libcpp-httplib-dev libxxhash-dev
  # servers and tools the tests and the sandbox run
  postgresql-15 postgresql-client-15 redis-server redis-tools kcat zstd
  util-linux procps
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq </dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
