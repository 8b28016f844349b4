#!/usr/bin/env bash
# Starts (or stops) a throwaway PostgreSQL 15 cluster from the installed binaries for tests and
# benchmarks. Usage: scripts/pg.sh start DIR [PORT] | scripts/pg.sh stop DIR
# Prints nothing on success; the URL is postgres://postgres@127.0.0.1:PORT/postgres
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cmd=${1:?start or stop}
dir=${2:?data directory}
port=${3:-55432}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
  if [ ! -x "$PGBIN/initdb" ]; then
    echo "PostgreSQL 15 is not installed (apt-get install -y postgresql-15)" >&2; exit 1
  fi
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    # The server runs as postgres: it must reach the directory (mktemp makes parents 0700).
    chmod a+x "$(dirname "$dir")"
    chown postgres "$dir"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
  fi
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_EXTRA_OPTS:-}" >/dev/null
  ;;
stop)
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  ;;
*) echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2 ;;
esac
