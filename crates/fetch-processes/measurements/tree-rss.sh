#!/usr/bin/env bash
# Peak memory of a `fetchlab run` and of its worker processes, which
# /usr/bin/time cannot give (it reports the largest single process, not the
# tree), plus wall time and the tree's CPU time.
#
#   measurements/tree-rss.sh MODEL C PAGES LATENCY_MS [fetchlab run flags...]
#
# Starts `fetchlab mock --latency-ms LATENCY_MS` in its own process, writes
# PAGES page URLs to a file, runs `fetchlab run --model MODEL --concurrency
# C` on them under /usr/bin/time, and samples /proc every 20 ms. Prints one
# Markdown row:
#
#   | model | C | pages | latency_ms | wall_s | cpu_s | pages_per_s |
#     parent_rss_kib | worker_rss_kib | worker_anon_kib | tree_rss_kib |
#     tree_pss_kib | workers |
#
# cpu_s is user + system of the whole tree (the parent reaps its workers, so
# their CPU time is in its rusage); worker_* are the largest worker's peaks
# (anon: RssAnon, the memory that is its own); tree_rss sums RSS over the
# parent and its workers, which counts the shared executable's pages once
# per process; tree_pss (/proc/PID/smaps_rollup) splits shared pages
# between the processes that map them, so it is the tree's real footprint.
# All peaks are sampled, so a peak shorter than 20 ms can be missed.
# FETCHLAB names the binary (default: target/release/fetchlab; build it with
# `cargo build --release -p fetchlab`).
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
model=$1 c=$2 pages=$3 lat=$4
shift 4
F=${FETCHLAB:-$(cd "$(dirname "$0")/../../.." && pwd)/target/release/fetchlab}
tmp=$(mktemp -d)
"$F" mock --latency-ms "$lat" >"$tmp/mock" 2>/dev/null &
mock=$!
trap 'kill $mock 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do grep -q http "$tmp/mock" && break; sleep 0.05; done
base=$(grep -o 'http://[0-9.:]*' "$tmp/mock" | head -1)
seq 0 $((pages - 1)) | sed "s|^|$base/page/|" >"$tmp/urls"

field() { awk -v f="$2" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss() { awk '$1 == "Pss:" {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

/usr/bin/time -f '%e %U %S' -o "$tmp/time" \
  "$F" run --model "$model" --concurrency "$c" --per-host "$c" --urls "$tmp/urls" "$@" >/dev/null 2>/dev/null &
timer=$!
pid=""
peak_parent=0 peak_worker=0 peak_anon=0 peak_tree=0 peak_pss=0 workers=0
while kill -0 "$timer" 2>/dev/null; do
  [ -n "$pid" ] || pid=$(pgrep -P "$timer" || true)
  if [ -n "$pid" ]; then
    parent=$(field "$pid" VmRSS:)
    tree=${parent:-0} tree_pss=$(pss "$pid") n=0
    for w in $(pgrep -P "$pid" 2>/dev/null); do
      rss=$(field "$w" VmRSS:) anon=$(field "$w" RssAnon:)
      tree=$((tree + ${rss:-0})) tree_pss=$((tree_pss + $(pss "$w"))) n=$((n + 1))
      ((${rss:-0} > peak_worker)) && peak_worker=$rss
      ((${anon:-0} > peak_anon)) && peak_anon=$anon
    done
    ((${parent:-0} > peak_parent)) && peak_parent=$parent
    ((tree > peak_tree)) && peak_tree=$tree
    ((tree_pss > peak_pss)) && peak_pss=$tree_pss
    ((n > workers)) && workers=$n
  fi
  sleep 0.02
done
wait "$timer" || true
read -r wall user sys <"$tmp/time"
awk -v m="$model" -v c="$c" -v p="$pages" -v l="$lat" -v w="$wall" -v u="$user" -v s="$sys" \
  -v pp="$peak_parent" -v pw="$peak_worker" -v pa="$peak_anon" -v pt="$peak_tree" \
  -v ps="$peak_pss" -v n="$workers" \
  'BEGIN { printf "| %s | %s | %s | %s | %.2f | %.2f | %.0f | %d | %d | %d | %d | %d | %d |\n",
           m, c, p, l, w, u + s, p / w, pp, pw, pa, pt, ps, n }'
