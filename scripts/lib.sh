# shellcheck shell=bash disable=SC2034  # the M_*, O_* and FL_* globals are for the callers
# Shared helpers for scripts/footprint, scripts/ceiling and scripts/peer.
# Sourced, never run: `source "$(dirname "$0")/lib.sh"`.
#
# What lives here is measurement plumbing only: installing the tools, building
# and snapshotting the fetchlab binary, starting mock servers on 127.0.0.1 and
# always stopping them, running one measured process under /usr/bin/time with
# a time bound, and writing CSV plus an aligned table. Each script keeps its
# own workload and its own columns.

FL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FL_CWD=$PWD        # where the script was started (fl_init moves to FL_ROOT)
FL_TMP=""          # scratch directory, removed on exit
FL_BIN=""          # snapshot of target/release/fetchlab (see fl_build)
FL_PIDS=()         # servers started by this script, stopped on exit
FL_RUN_PID=""      # the measured process while it runs, stopped on exit
FL_MODELS=()       # models to measure (see fl_models)
FL_SAMPLE=1        # fl_measure samples threads and fds (0: only /usr/bin/time)

# Sort and glob in byte order: faster, and the same output on every machine.
export LC_ALL=C

fl_log() { printf '%s\n' "$*" >&2; }
fl_die() { fl_log "error: $*"; exit 1; }

# cd to the repository, make the scratch directory, and install the cleanup
# that stops every server and measured process this script started.
fl_init() {
  cd "$FL_ROOT" || exit 1
  FL_TMP=$(mktemp -d "${TMPDIR:-/tmp}/fetchlab-scripts.XXXXXX")
  trap fl_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

fl_cleanup() {
  local pid
  if [[ -n $FL_RUN_PID ]]; then kill -9 "$FL_RUN_PID" 2>/dev/null || true; fi
  for pid in "${FL_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${FL_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n $FL_TMP ]] && rm -rf "$FL_TMP"
}

# fl_need CMD:PACKAGE ... — installs the Debian packages whose command is
# missing (CMD may be an absolute path: `time` is also a shell keyword, so
# /usr/bin/time is checked by path). Nothing is installed if all are present.
fl_need() {
  local spec cmd pkg missing=()
  for spec in "$@"; do
    cmd=${spec%%:*} pkg=${spec#*:}
    if [[ $cmd == /* ]]; then [[ -x $cmd ]] && continue
    else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  fl_log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Raise the soft open-files limit to the hard limit. Every process this script
# starts (client and mock server alike) inherits it, and each is a separate
# process with its own table, so each gets the whole limit.
fl_raise_nofile() {
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  FL_NOFILE=$(ulimit -n)
}

# Build the binary, then measure a private copy: other people may rebuild
# target/release/fetchlab while a long measurement runs.
fl_build() {
  fl_log "building: cargo build --release -p fetchlab"
  cargo build --release -q -p fetchlab
  FL_BIN=$FL_TMP/fetchlab
  cp target/release/fetchlab "$FL_BIN"
}

# fl_models [a,b,...] — the models to measure: the registered ones, as
# `fetchlab models` prints them at run time, optionally narrowed to a list.
fl_models() {
  local want=${1:-} m
  mapfile -t FL_MODELS < <("$FL_BIN" models)
  ((${#FL_MODELS[@]})) || fl_die "fetchlab models printed no model"
  [[ -z $want ]] && return 0
  local registered=" ${FL_MODELS[*]} " picked=()
  for m in ${want//,/ }; do
    if [[ $registered == *" $m "* ]]; then picked+=("$m")
    else fl_log "warning: model '$m' is not registered (have:${registered% }), skipped"; fi
  done
  FL_MODELS=("${picked[@]}")
  ((${#FL_MODELS[@]})) || fl_die "none of the requested models is registered"
}

# fl_mock ARGS... — start `fetchlab mock ARGS` on 127.0.0.1 (its default
# address) and wait for its base URL. Sets FL_MOCK_PID, FL_MOCK_BASE and
# FL_MOCK_ERR (its stderr file).
fl_mock() {
  local out
  out=$(mktemp "$FL_TMP/mock.XXXXXX")
  FL_MOCK_ERR=$out.err
  "$FL_BIN" mock "$@" >"$out" 2>"$FL_MOCK_ERR" &
  FL_MOCK_PID=$!
  FL_PIDS+=("$FL_MOCK_PID")
  local i
  for ((i = 0; i < 100; i++)); do
    [[ $(wc -l <"$out") -ge 1 ]] && break
    kill -0 "$FL_MOCK_PID" 2>/dev/null || fl_die "mock server exited: $(cat "$FL_MOCK_ERR")"
    sleep 0.05
  done
  FL_MOCK_BASE=$(head -n1 "$out")
  [[ $FL_MOCK_BASE == http://127.0.0.1:* ]] || fl_die "mock server did not print its URL"
}

# fl_mock_stop — stop the server fl_mock started last.
fl_mock_stop() {
  local pid=$FL_MOCK_PID p keep=()
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # Forget it, so the exit trap never signals a PID the system has reused.
  for p in "${FL_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  FL_PIDS=("${keep[@]}")
  FL_MOCK_PID=""
}

# fl_stats BASE — the mock's /__stats JSON, over bash's /dev/tcp so that a
# fresh machine needs no curl.
fl_stats() {
  local hostport=${1#http://} fd resp
  exec {fd}<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || return 1
  printf 'GET /__stats HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$hostport" >&"$fd"
  resp=$(timeout 10 cat <&"$fd") || true
  exec {fd}>&-
  printf '%s\n' "${resp#*$'\r\n\r\n'}"
}

# fl_json_num FIELD — the first numeric value of "FIELD" in the JSON on stdin.
fl_json_num() { { grep -oE "\"$1\": *[0-9.eE+-]+" || true; } | head -n1 | cut -d: -f2 | tr -d ' '; }

# fl_urls BASE N FILE — N page URLs, ids 0..N-1.
fl_urls() { seq 0 $(($2 - 1)) | sed "s|^|$1/page/|" >"$3"; }

# fl_count_fds PID / fl_count_threads PID — current counts, 0 if it is gone.
# Bash builtins only: this runs every 50 ms next to the process it measures.
fl_count_fds() {
  local fds
  shopt -s nullglob
  fds=(/proc/"$1"/fd/*)
  shopt -u nullglob
  echo "${#fds[@]}"
}
fl_count_threads() {
  local k v n=0
  { while read -r k v _; do
      [[ $k == Threads: ]] && { n=$v; break; }
    done </proc/"$1"/status; } 2>/dev/null || true
  echo "$n"
}

# fl_tree PID — "threads fds rss_kb" summed over PID and every process below
# it (a model with worker processes is its whole tree), from one `ps` and
# /proc; "0 0 0" once PID is gone.
fl_tree() {
  local pids p threads=0 fds=0 rss=0 n
  mapfile -t pids < <(ps -e -o pid=,ppid= 2>/dev/null | awk -v root="$1" '
    { parent[$1] = $2; order[NR] = $1 }
    END {
      keep[root] = 1; changed = 1
      while (changed) { changed = 0
        for (i = 1; i <= NR; i++) { q = order[i]
          if (!(q in keep) && (parent[q] in keep)) { keep[q] = 1; changed = 1 } } }
      for (q in keep) print q }')
  for p in "${pids[@]}"; do
    [[ -r /proc/$p/status ]] || continue
    n=$(fl_count_threads "$p"); threads=$((threads + n))
    n=$(fl_count_fds "$p"); fds=$((fds + n))
    n=$(awk '/^VmRSS:/ { print $2; exit }' /proc/"$p"/status 2>/dev/null || true)
    rss=$((rss + ${n:-0}))
  done
  echo "$threads $fds $rss"
}

# fl_measure TIMEOUT_S CMD... — run CMD under `timeout` and /usr/bin/time,
# sampling its thread and fd counts (and the mock's fds, if FL_MOCK_PID is
# set) every ~50 ms unless FL_SAMPLE=0 (throughput runs: the sampler costs a
# little CPU on a two-core machine). CMD's stdout/stderr go to $FL_TMP/run.out / run.err.
# Sets: M_STATUS (exit status; 124 = timed out), M_RSS_KB, M_USER_S, M_SYS_S,
# M_WALL_S, M_THREADS, M_FDS, M_MOCK_FDS. Threads and fds are summed over
# CMD's process tree, and so is M_RSS_KB when the sampled sum of the tree's
# RSS is larger than time's peak: time reports the largest single process,
# which would count a model with worker processes as its biggest one.
#
# /usr/bin/time wraps `timeout`, which wraps CMD: time's rusage comes from
# wait4 on timeout, which includes the children timeout has reaped, so peak
# RSS and CPU times are CMD's (timeout itself is a few hundred KB and no CPU).
# A tiny bash exec wrapper writes CMD's PID so the sampler watches the right
# process.
fl_measure() {
  local tsec=$1; shift
  local pidf=$FL_TMP/run.pid tf=$FL_TMP/run.time
  rm -f "$pidf" "$tf"
  # shellcheck disable=SC2016  # $$ and $@ are the inner bash's, on purpose
  /usr/bin/time -o "$tf" -f '%M %U %S %e' \
    timeout -k 10 "$tsec" bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" "$@" \
    >"$FL_TMP/run.out" 2>"$FL_TMP/run.err" &
  local tpid=$! pid="" n
  M_THREADS=0 M_FDS=0 M_MOCK_FDS=0
  local tree_rss=0 t_threads t_fds t_rss
  while kill -0 "$tpid" 2>/dev/null; do
    if [[ -z $pid && -s $pidf ]]; then read -r pid <"$pidf" || pid=""; FL_RUN_PID=$pid; fi
    if [[ -n $pid && $FL_SAMPLE == 1 ]]; then
      read -r t_threads t_fds t_rss <<<"$(fl_tree "$pid")"
      ((t_threads > M_THREADS)) && M_THREADS=$t_threads
      ((t_fds > M_FDS)) && M_FDS=$t_fds
      ((t_rss > tree_rss)) && tree_rss=$t_rss
    fi
    if [[ -n ${FL_MOCK_PID:-} && $FL_SAMPLE == 1 ]]; then
      n=$(fl_count_fds "$FL_MOCK_PID"); ((n > M_MOCK_FDS)) && M_MOCK_FDS=$n
    fi
    sleep 0.05
  done
  M_STATUS=0
  wait "$tpid" || M_STATUS=$?
  FL_RUN_PID=""
  # On failure time writes "Command exited with non-zero status N" first.
  local line
  line=$(tail -n1 "$tf" 2>/dev/null || true)
  read -r M_RSS_KB M_USER_S M_SYS_S M_WALL_S <<<"$line" || true
  [[ ${M_RSS_KB:-} =~ ^[0-9]+$ ]] || { M_RSS_KB=""; M_USER_S=""; M_SYS_S=""; M_WALL_S=""; }
  if [[ -n $M_RSS_KB ]] && ((tree_rss > M_RSS_KB)); then M_RSS_KB=$tree_rss; fi
}

# fl_status_note STATUS TIMEOUT_S — a words-only reading of an exit status.
fl_status_note() {
  local s=$1
  case $s in
    0) ;;
    124) echo "timed out after $2 s" ;;
    137) echo "killed (SIGKILL)" ;;
    *) if ((s > 128)); then echo "killed by signal $((s - 128)) ($(kill -l $((s - 128)) 2>/dev/null || echo '?'))"
       else echo "exit status $s"; fi ;;
  esac
}

# fl_outcomes FILE — from `fetchlab run` JSON lines, sets O_RECORDS, O_OK,
# O_ERRORS and O_KINDS ("timeout 3; connect 1", empty when no error).
fl_outcomes() {
  [[ -f $1 ]] || : >"$1"
  O_RECORDS=$(wc -l <"$1")
  O_OK=$(grep -c '"ok":true' "$1" || true)
  O_ERRORS=$((O_RECORDS - O_OK))
  O_KINDS=$({ grep -o '"kind":"[a-z_]*"' "$1" || true; } | cut -d'"' -f4 | sort | uniq -c |
    awk '{printf "%s%s %s", (NR > 1 ? "; " : ""), $2, $1}')
}

# fl_last_err FILE — the last non-empty stderr line that looks like a failure
# (a panic, an OS error), for the note column; empty otherwise.
fl_last_err() {
  grep -aE 'panicked|error|Error|failed|Too many|Resource|memory|abort' "$1" 2>/dev/null |
    grep -vE '^fetchlab run \(|^  errors by kind' | tail -n1 | cut -c1-160 || true
}

# fl_clean_note TEXT — CSV-safe (no commas, quotes or newlines), so every
# CSV here can be read with a plain split on commas.
fl_clean_note() { printf '%s' "$*" | tr ',\n"' ';  ' | sed 's/  */ /g; s/^ //; s/ $//; s/^; //'; }

# fl_div A B [DIGITS] — A / B, empty if either is empty or B is zero.
fl_div() {
  awk -v a="${1:-}" -v b="${2:-}" -v d="${3:-2}" \
    'BEGIN { if (a == "" || b == "" || b + 0 == 0) print ""; else printf "%.*f\n", d, a / b }'
}

# fl_table CSV — the CSV as an aligned table on stdout.
fl_table() {
  awk -F, '
    { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }
      if (NF > nf) nf = NF; rows = NR }
    END { for (r = 1; r <= rows; r++) {
            line = ""
            for (i = 1; i <= nf; i++) line = line sprintf("%-*s  ", w[i], cell[r, i])
            sub(/ +$/, "", line); print line
            if (r == 1) { line = ""; for (i = 1; i <= nf; i++) { d = sprintf("%*s", w[i], ""); gsub(/ /, "-", d); line = line d "  " }
                          sub(/ +$/, "", line); print line } } }' "$1"
}

# fl_outdir DIR — create it (a relative DIR is relative to where the script
# was started, not to the repository), print its absolute path.
fl_outdir() {
  local dir=$1
  [[ $dir == /* ]] || dir=$FL_CWD/$dir
  mkdir -p "$dir" && (cd "$dir" && pwd)
}
