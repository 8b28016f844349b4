#!/usr/bin/env bash
# Starts (or stops) a throwaway S3-compatible server (moto, from PyPI into DIR/venv, reused when
# there) for the object store's tests. Usage: scripts/s3.sh start DIR [PORT [BUCKET]] |
# scripts/s3.sh stop DIR. On start it waits until the server answers, creates the bucket
# (suanli-test unless given), and prints nothing; the store's configuration is then
#   s3://BUCKET?endpoint=http://127.0.0.1:PORT&region=us-east-1
# with AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test (moto takes any keys).
set -euo pipefail
cmd=${1:?start or stop}
dir=${2:?state directory}
port=${3:-5055}
bucket=${4:-suanli-test}
case "$cmd" in
start)
  mkdir -p "$dir"
  if [ ! -x "$dir/venv/bin/moto_server" ]; then
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]' >"$dir/pip.log" 2>&1 \
      || { cat "$dir/pip.log" >&2; exit 1; }
  fi
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "an S3 server from $dir is already running (pid $(cat "$dir/pid"))" >&2; exit 1
  fi
  "$dir/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/"; then
      curl -sf -o /dev/null -X PUT "http://127.0.0.1:$port/$bucket"
      exit 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "the S3 server did not start on 127.0.0.1:$port; its log:" >&2
  cat "$dir/log" >&2
  exit 1
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  ;;
*) echo "usage: $0 start|stop DIR [PORT [BUCKET]]" >&2; exit 2 ;;
esac
