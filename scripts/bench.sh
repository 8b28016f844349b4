#!/usr/bin/env bash
# Runs every benchmark of the exchange core in one go and prints a markdown table of the figures
# with the machine and the date (see docs/BENCHMARKS.md).
#
# Usage: scripts/bench.sh [RESULTS_FILE]
#   SECONDS_PER_RUN (default 10)  measured seconds of each throughput benchmark
#   PG_PORT         (default 55499) port of the throwaway PostgreSQL cluster
#   SKIP_BUILD=1    use the release binaries as they are
#   JOBS_N          (default 1000) trivial jobs of the jobs throughput benchmark; JOBS_N=0 skips
#                   both jobs benchmarks
#   SLURM           (default tuned) the Slurm the jobs are compared with (scripts/slurm.sh):
#                   tuned (batch_sched_delay=0), recipe (Slurm's defaults; ~3x slower, about 25 min
#                   for 1,000 jobs on 2 CPUs), 0 (Suanli side only)
# Needs PostgreSQL 15 binaries (/usr/lib/postgresql/15/bin, see scripts/pg.sh) and pgbench; the
# jobs benchmarks need root for Slurm (scripts/slurm.sh installs and starts it) and the agent.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${SECONDS_PER_RUN:-10}
port=${PG_PORT:-55499}
results=${1:-$(mktemp /tmp/suanli-bench-results.XXXXXX.jsonl)}
work=$(mktemp -d /tmp/suanli-bench.XXXXXX)
pgdir="$work/pg"
pgbench_bin=${PGBENCH:-$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)}
url="postgres://postgres@127.0.0.1:$port/postgres"

jobs_n=${JOBS_N:-1000}
slurm_mode=${SLURM:-tuned}
slurm_started=0

cleanup() {
  scripts/pg.sh stop "$pgdir" || true
  if [ "$slurm_started" = 1 ]; then
    scripts/slurm.sh stop || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p suanli -p suanli-bench
fi
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin="$target_dir/release/suanli-bench"
: >"$results"

# Runs one benchmark: the human line goes to the terminal, the JSON line to the results file.
run() {
  local out
  out=$("$bin" "$@")
  printf '%s\n' "$out" | grep -v '^{' || true
  printf '%s\n' "$out" | grep '^{' >>"$results"
}

echo "== starting PostgreSQL 15 on 127.0.0.1:$port (fsync on)"
chmod 755 "$work" # the cluster runs as the postgres user, below this directory
scripts/pg.sh start "$pgdir" "$port"

echo "== disk"
run fsync --seconds 2

echo "== quote"
run quote

echo "== pgbench: durable single-row inserts, 16 clients"
psql_bin=/usr/lib/postgresql/15/bin/psql
[ -x "$psql_bin" ] || psql_bin=psql
PGOPTIONS='-c client_min_messages=warning' "$psql_bin" -q -X -v ON_ERROR_STOP=1 "$url" \
  -c "DROP TABLE IF EXISTS t" -c "CREATE TABLE t (id bigserial PRIMARY KEY, v bigint NOT NULL)"
cat >"$work/insert.sql" <<'SQL'
\set i random(1, 1000000000)
INSERT INTO t(v) VALUES (:i);
SQL
mkdir -p "$work/pgbench"
(cd "$work/pgbench" && "$pgbench_bin" -n -c 16 -j 2 -T "$secs" -l --log-prefix=insert \
  -f "$work/insert.sql" -h 127.0.0.1 -p "$port" -U postgres postgres) >"$work/pgbench.out" 2>&1 \
  || { cat "$work/pgbench.out"; exit 1; }
run pgbench-summary --clients 16 --report "$work/pgbench.out" "$work"/pgbench/insert*
# PostgreSQL writes pgbench's dirty buffers back later, at its next checkpoint: do it now, so that
# this deferred work of pgbench's run does not take the disk and CPU from the runs after it.
"$psql_bin" -q -X "$url" -c CHECKPOINT
sync

echo "== purchases through the HTTP API, 64 connections"
run purchases --backend sqlite --seconds "$secs"
run purchases --backend naive-sqlite --seconds "$secs"
run purchases --backend postgres --seconds "$secs" --database-url "$url"
run purchases --backend sqlite --seconds "$secs" --end

echo "== ledger transfers through the store's writer, 16 clients"
run ledger --backend sqlite --seconds "$secs"
run ledger --backend postgres --seconds "$secs" --database-url "$url"

if [ "$jobs_n" != 0 ]; then
  echo "== jobs through the exchange and the real agent (local backend)"
  run jobs latency --suanli-bin "$target_dir/release/suanli"
  slurm_args=(--no-slurm)
  if [ "$slurm_mode" != 0 ]; then
    scripts/slurm.sh status || slurm_started=1
    mode_arg=""
    [ "$slurm_mode" = tuned ] && mode_arg=tuned
    if scripts/slurm.sh start $mode_arg; then
      slurm_args=()
    else
      echo "Slurm could not be started (above): the jobs are measured on Suanli only"
    fi
  fi
  run jobs throughput --jobs "$jobs_n" --suanli-bin "$target_dir/release/suanli" "${slurm_args[@]}"
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
disk_dev=$(df -P /tmp | awk 'NR == 2 {print $1}')
disk_name=$(basename "$disk_dev")
rot=$(cat "/sys/block/$disk_name/queue/rotational" 2>/dev/null || echo "?")
disk_size=$(lsblk -dno SIZE "$disk_dev" 2>/dev/null | tr -d ' ' || true)
echo
echo "## Results"
echo
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- Machine: $(nproc) vCPU ($cpu), $mem RAM, load average before the table: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- Disk: $disk_dev ${disk_size:-?} (rotational=$rot), temp dir /tmp"
echo "- Versions: $(rustc --version 2>/dev/null || echo rustc ?), PostgreSQL $("$pgbench_bin" --version | awk '{print $3}') binaries, SQLite bundled with rusqlite"
echo "- Runs: $secs s measured after 1 s warm-up; results in $results"
echo
"$bin" table "$results"
