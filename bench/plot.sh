#!/usr/bin/env bash
# Draws PNG charts (gnuplot, Debian's gnuplot-nox) from the CSVs the end-to-end benchmarks
# write. Each chart is drawn only when its CSV is there, so it runs after any subset of them.
#
#   bash bench/plot.sh [results-dir]        (default bench/results)
set -euo pipefail

dir=${1:-bench/results}
command -v gnuplot >/dev/null || { echo "plot: gnuplot not found: apt-get install gnuplot-nox (scripts/install-deps.sh does)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "plot: python3 not found: apt-get install python3 (scripts/install-deps.sh does)" >&2; exit 1; }
[[ -d $dir ]] || { echo "plot: no results directory $dir: run a benchmark first (docs/benchmarks.md)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One bar per CSV row: label column, value column, title, y label, output name, and a regex a
# row (its fields joined by commas) must match to be drawn. Labels may be quoted ("ferry
# (archived, io_uring)"); the rows are rewritten tab-separated for gnuplot.
bars() {
  local csv=$1 label_col=$2 value_col=$3 title=$4 ylabel=$5 out=$6 filter=${7:-}
  [[ -f $dir/$csv ]] || return 0
  python3 - "$dir/$csv" "$label_col" "$value_col" "$filter" > "$tmp/$out.tsv" <<'PY'
import csv, re, sys
path, lc, vc, flt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = list(csv.reader(open(path)))
for r in rows[1:]:
    if flt and not re.search(flt, ",".join(r)):
        continue
    print(f"{r[lc - 1]}\t{r[vc - 1]}")
PY
  [[ -s $tmp/$out.tsv ]] || return 0
  gnuplot <<GP
set terminal pngcairo size 900,420 font ",10"
set output "$dir/$out.png"
set datafile separator "\t"
set title "$title"
set ylabel "$ylabel"
set style fill solid 0.8 border -1
set boxwidth 0.6
set yrange [0:*]
set grid ytics
set xtics rotate by -20 noenhanced
unset key
plot "$tmp/$out.tsv" using 0:2:xtic(1) with boxes lc rgb "#3b6ea8", \
     "" using 0:2:(sprintf("%.3g", \$2)) with labels offset 0,0.8 notitle
GP
  echo "plot: $dir/$out.png"
}

bars physical.csv 1 3 "pgbench TPS: no standby, synchronous standby, asynchronous capture" "TPS" physical_tps
bars physical.csv 1 8 "CPU seconds per GB of WAL (capturing process), asynchronous" "CPU s / GB WAL" physical_cpu ",async,"
bars physical.csv 1 10 "Bytes stored per byte of WAL, asynchronous" "stored / WAL" physical_stored ",async,"
bars redis.csv 1 2 "Redis primary SET/s with a replica attached (redis-benchmark -P 16)" "SET/s" redis_throughput
bars redis.csv 1 5 "Replica CPU seconds per GB of replication stream" "CPU s / GB" redis_cpu "^(?!no replica)"
bars logical.csv 1 4 "Change events per second" "events/s" logical
bars disk.csv 1 4 "Sequential write with fdatasync: ferry's archive writers vs dd" "MB/s" disk
bars restore.csv 1 2 "PostgreSQL recovery time for the same WAL" "seconds" restore
bars kafka_lag.csv 1 5 "Cross-region lag primary -> Kafka -> mirror, p99" "seconds" kafka_lag

# Replication lag over time: one line per capturer (physical_lag.csv, sampled every 250 ms).
if [[ -f $dir/physical_lag.csv ]]; then
  python3 - "$dir/physical_lag.csv" "$tmp" > "$tmp/series.gp" <<'PY'
import csv, sys, collections
series = collections.OrderedDict()
for r in list(csv.DictReader(open(sys.argv[1]))):
    # Drawn on a log scale, where 0 has no place: a lag under 0.1 KiB is drawn at 0.1.
    series.setdefault(f"{r['capture']} ({r['standby']})", []).append((r["t_s"], max(float(r["lag_bytes"]) / 1024, 0.1)))
parts = []
for i, (name, points) in enumerate(series.items()):
    path = f"{sys.argv[2]}/lag{i}.dat"
    with open(path, "w") as f:
        f.writelines(f"{t} {kib}\n" for t, kib in points)
    parts.append(f'"{path}" using 1:2 with lines lw 2 title "{name}"')
print("plot " + ", ".join(parts) if parts else "")
PY
  if [[ -s $tmp/series.gp ]]; then
    gnuplot <<GP
set terminal pngcairo size 900,420 font ",10"
set output "$dir/physical_lag.png"
set title "Flush position behind the primary's WAL end during pgbench"
set xlabel "seconds into the load"
set ylabel "KiB behind (log; 0 drawn at 0.1)"
set logscale y
set grid
set key outside right noenhanced
$(cat "$tmp/series.gp")
GP
    echo "plot: $dir/physical_lag.png"
  fi
fi
