#!/usr/bin/env bash
# Produces wal_sample/: two consecutive real PostgreSQL 15 WAL segments (1 MiB, zstd-compressed),
# the second ending in XLOG_SWITCH, and expected.txt with what pg_waldump reports for them.
# Usage (as root or as a user that can run initdb): tests/testdata/make_wal_sample.sh
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
OUT="$(cd "$(dirname "$0")" && pwd)/wal_sample"
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export TZ=UTC  # pg_waldump prints commit times in the process's zone

WORK=$(mktemp -d /tmp/ferry-wal-sample.XXXXXX)
chmod 755 "$WORK"
AS=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$WORK"
  AS=(runuser -u postgres --)
fi
cleanup() {
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ -n "${KEEP:-}" ]; then trap - EXIT; fi  # KEEP=1: leave the cluster running to inspect

"${AS[@]}" "$PGBIN/initdb" -D "$WORK/data" -U postgres --wal-segsize=1 --no-sync >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w start -o \
  "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$WORK \
   -c max_prepared_transactions=4 -c wal_level=logical -c fsync=off" >/dev/null

psql() { "${AS[@]}" "$PGBIN/psql" -h "$WORK" -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }

"${AS[@]}" "$PGBIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -i -s 2 -q postgres >/dev/null 2>&1
psql -c "SELECT pg_switch_wal()" >/dev/null
# The sample: plain commits, a prepared transaction committed later (COMMIT_PREPARED), records
# with full-page images (first changes after the checkpoint), a 20 kB logical message spanning
# pages, records continuing across page and segment boundaries; then XLOG_SWITCH and zero filler.
psql -c "CHECKPOINT"
"${AS[@]}" "$PGBIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -n -t 150 -c 1 postgres >/dev/null
psql >/dev/null <<'SQL'
BEGIN; UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1; PREPARE TRANSACTION 'ferry1';
SELECT pg_logical_emit_message(true, 'ferry', repeat('x', 20000));
COMMIT PREPARED 'ferry1';
SQL
NAMES=$(psql -At -F ' ' -c "SELECT pg_walfile_name(lsn - 1048576), pg_walfile_name(lsn) FROM pg_switch_wal() AS lsn")
read -r SEG1 SEG2 <<<"$NAMES"
for s in "$SEG1" "$SEG2"; do
  cp "$WORK/data/pg_wal/$s" "$WORK/$s"
  chmod 644 "$WORK/$s"
done

SYSID=$("${AS[@]}" "$PGBIN/pg_controldata" -D "$WORK/data" | awk -F': *' '/Database system identifier/ {print $2}')
# One line per record from the first record that starts in SEG1 through the XLOG_SWITCH in SEG2;
# pg_waldump then stops with an error (the next segment is not there).
"${AS[@]}" "$PGBIN/pg_waldump" "$WORK/$SEG1" "$WORK/$SEG2" >"$WORK/dump.txt" 2>/dev/null || true
tail -1 "$WORK/dump.txt" | grep -q 'rmgr: XLOG .*desc: SWITCH'
RECORDS=$(wc -l <"$WORK/dump.txt")
# "commit <xl_xid> <time>": xl_xid is 0 in COMMIT_PREPARED records.
grep -E 'rmgr: Transaction .*desc: COMMIT(_PREPARED)? ' "$WORK/dump.txt" |
  sed -E 's/.* tx: *([0-9]+), .*desc: COMMIT(_PREPARED)? ([0-9]+: )?([0-9-]+) ([0-9:.]+) UTC.*/commit \1 \4T\5Z/' \
  >"$WORK/commits.txt"
grep -q COMMIT_PREPARED "$WORK/dump.txt"

mkdir -p "$OUT"
rm -f "$OUT"/*.zst
for s in "$SEG1" "$SEG2"; do zstd -q -19 "$WORK/$s" -o "$OUT/$s.zst"; done
{
  echo "# Written by make_wal_sample.sh from pg_waldump $SEG1 $SEG2."
  echo "segments $SEG1 $SEG2"
  echo "segment_bytes 1048576"
  echo "system_id $SYSID"
  echo "records $RECORDS"
  echo "commits $(wc -l <"$WORK/commits.txt")"
  cat "$WORK/commits.txt"
} >"$OUT/expected.txt"
head -6 "$OUT/expected.txt"
ls -l "$OUT"
