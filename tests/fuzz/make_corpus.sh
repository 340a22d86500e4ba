#!/usr/bin/env bash
# Produces tests/fuzz/corpus/<target>/: the fuzz targets' seed inputs, all real captures.
#   wal_decoder  the first pages of the two real WAL segments in tests/testdata/wal_sample
#   pgoutput     every message a PostgreSQL 15 pgoutput slot emits for a mixed workload (all
#                column kinds, update/delete/truncate, a logical message, a streamed transaction)
#   resp         a Redis 7 AOF (the replication stream's RESP) of a mixed workload
#   segment      segments of the archive a short `ferry sandbox` run writes (every stream kind)
#   manifest     that archive's snapshot manifests (a base backup, an RDB image)
#   config       tools/ferry.example.toml, tools/ferry.mirror.example.toml
# Usage, after building (FERRY_BUILD_DIR, default build): tests/fuzz/make_corpus.sh
# Run it as root or as a user that can run initdb. The result is committed; re-run it only to
# refresh the seeds.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT="$ROOT/tests/fuzz/corpus"
FERRY="$ROOT/${FERRY_BUILD_DIR:-build}/tools/ferry"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d /tmp/ferry-corpus.XXXXXX)
chmod 755 "$WORK"
AS=()
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); fi
cleanup() {
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

rm -rf "$OUT"
mkdir -p "$OUT"/{wal_decoder,pgoutput,resp,segment,manifest,config}

# --- wal_decoder: a split byte, then WAL from a segment's start (the target's input layout).
for seg in 000000010000000000000020 000000010000000000000021; do
  zstd -q -dc "tests/testdata/wal_sample/$seg.zst" > "$WORK/$seg"
  for len in 8192 65536; do
    { printf '\x80'; head -c $len "$WORK/$seg"; } > "$OUT/wal_decoder/$seg-$len"
  done
done

# --- pgoutput: each message of a slot, with the in-stream flag byte the target expects.
PGPORT=$(free_port)
mkdir "$WORK/pg" && chown postgres "$WORK/pg" 2>/dev/null || true
"${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres --no-sync >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/server.log" -w start -o \
  "-c listen_addresses=127.0.0.1 -c port=$PGPORT -c unix_socket_directories='' -c wal_level=logical \
   -c logical_decoding_work_mem=64kB -c fsync=off" >/dev/null
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres)
"${PSQL[@]}" >/dev/null <<'SQL'
CREATE TABLE t (id int PRIMARY KEY, n numeric, f float8, b bool, s text, j jsonb, u uuid, d date,
                ts timestamptz, by bytea, a int[]);
CREATE TABLE k (x text, y int);
ALTER TABLE k REPLICA IDENTITY FULL;
CREATE PUBLICATION p FOR ALL TABLES;
SELECT pg_create_logical_replication_slot('s', 'pgoutput');
INSERT INTO t VALUES (1, 12.5, 1e300, true, 'héllo', '{"a":[1,2]}', gen_random_uuid(), '2024-02-29',
                      now(), '\x00ff', '{1,2,3}'), (2, NULL, 'NaN', false, repeat('x', 5000), 'null', NULL,
                      'infinity', NULL, NULL, '{}');
UPDATE t SET s = 'changed' WHERE id = 1;
UPDATE t SET id = 3 WHERE id = 2;
INSERT INTO k VALUES ('a', 1), ('b', NULL);
UPDATE k SET y = 2 WHERE x = 'a';
DELETE FROM k WHERE x = 'b';
DELETE FROM t WHERE id = 1;
SELECT pg_logical_emit_message(true, 'ferry', 'a transactional message');
TRUNCATE k;
BEGIN; INSERT INTO k SELECT g::text, g FROM generate_series(1, 3000) g; COMMIT;
BEGIN; INSERT INTO k SELECT g::text, g FROM generate_series(1, 3000) g; ROLLBACK;
ALTER TABLE t ADD COLUMN extra int DEFAULT 7;
INSERT INTO t (id) VALUES (10);
SQL
"${PSQL[@]}" -At -c "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL,
  'proto_version', '2', 'publication_names', 'p', 'streaming', 'on', 'messages', 'true')" |
python3 -c '
import sys
out = sys.argv[1]
in_stream, n, kept = False, 0, {}
for line in sys.stdin:
    msg = bytes.fromhex(line.strip())
    t = chr(msg[0])
    if t == "S": in_stream = True
    # Keep a few of each kind and stream state: the corpus needs variety, not volume.
    key = (t, in_stream)
    kept[key] = kept.get(key, 0) + 1
    if kept[key] <= 3:
        name = "%s/%03d-%s%s" % (out, n, t, "-stream" if in_stream else "")
        with open(name, "wb") as f:
            f.write(bytes([1 if in_stream else 0]) + msg)
        n += 1
    if t == "E": in_stream = False
' "$OUT/pgoutput"

# --- resp: the incremental AOF of a Redis 7 (pure RESP, as a replica receives it).
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes --appendfsync always \
  --save '' --daemonize yes --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log"
R=(redis-cli -p "$RPORT")
for _ in $(seq 50); do "${R[@]}" ping >/dev/null 2>&1 && break; sleep 0.1; done
"${R[@]}" set k1 v1 >/dev/null
"${R[@]}" set bin "$(printf 'a\r\nb\x01')" EX 100 >/dev/null
"${R[@]}" hset h f1 1 f2 2 >/dev/null
"${R[@]}" rpush l a b c >/dev/null
"${R[@]}" zadd z 1 a 2.5 b >/dev/null
"${R[@]}" xadd st '*' field value >/dev/null
"${R[@]}" incrbyfloat fl 1.5 >/dev/null
printf 'MULTI\r\nSET m1 1\r\nSET m2 2\r\nEXEC\r\n' | "${R[@]}" >/dev/null
"${R[@]}" select 3 >/dev/null
"${R[@]}" -n 3 del k1 >/dev/null
"${R[@]}" -n 3 set big "$(head -c 20000 /dev/zero | tr '\0' x)" >/dev/null
for f in "$WORK"/appendonlydir/*.incr.aof; do cp "$f" "$OUT/resp/$(basename "$f")"; done
cat "$OUT"/resp/*.incr.aof > "$WORK/all.aof"
head -c 300 "$WORK/all.aof" > "$OUT/resp/head-300"

# --- segment, manifest: a short sandbox run's archive.
"$FERRY" sandbox --seconds 2 --keep --dir "$WORK/sandbox" >/dev/null
find "$WORK/sandbox/archive/streams" -name '*.seg' | while read -r seg; do
  kind=$(basename "$(dirname "$seg")")
  # Each stream's first segment, cut at 128 KiB (a cut frame is a torn tail: a seed too).
  dest="$OUT/segment/$kind-$(basename "$seg")"
  head -c 131072 "$seg" > "$dest" || true
done
find "$WORK/sandbox/archive" -name '*.snap' | while read -r m; do
  cp "$m" "$OUT/manifest/$(basename "$(dirname "$(dirname "$m")")")-$(basename "$m")"
done

cp tools/ferry.example.toml tools/ferry.mirror.example.toml "$OUT/config/"
for d in "$OUT"/*; do echo "make_corpus: $(basename "$d"): $(ls "$d" | wc -l) seeds"; done
