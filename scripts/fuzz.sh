#!/usr/bin/env bash
# Fuzzes the whole API from its OpenAPI document with schemathesis (from PyPI) against a real demo
# server, as the operator, a provider and a consumer. Fails on any 5xx answer.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
venv=${SUANLI_FUZZ_VENV:-$target_dir/fuzz-venv}
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis>=4,<5'
fi
cargo build --locked -q -p suanli
work=$(mktemp -d /tmp/suanli-fuzz.XXXXXX)
port=$((58000 + RANDOM % 2000))
SUANLI_CONFIG="$work/config.toml" "$target_dir/debug/suanli" demo --data-dir "$work/data" --port "$port" \
  >"$work/demo.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
up=
for _ in $(seq 300); do
  if curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null && [ -f "$work/data/demo.json" ]; then
    up=1
    break
  fi
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "the demo server did not come up for the fuzz run:"; cat "$work/demo.log"; exit 1
fi
token() { python3 -c "import json,sys; print(next(o['token'] for o in json.load(open(sys.argv[1]))['orgs'] if o['profile']==sys.argv[2]))" "$work/data/demo.json" "$1"; }
for profile in enterprise ai-center operator; do
  echo "-- as $profile"
  "$venv/bin/schemathesis" run "http://127.0.0.1:$port/api/v1/openapi.json" \
    --url "http://127.0.0.1:$port" \
    -H "Authorization: Bearer $(token "$profile")" \
    --checks not_a_server_error \
    --max-examples "${SUANLI_FUZZ_EXAMPLES:-40}" \
    --seed 1 \
    --no-color
done
if grep -q 'panicked' "$work/demo.log"; then
  echo "the server panicked during the fuzz run:"; grep -A5 panicked "$work/demo.log"; exit 1
fi
echo "fuzz: no 5xx, no panic"
