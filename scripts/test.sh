#!/usr/bin/env bash
# Runs every test of Suanli on this machine:
#   1. the whole workspace on the embedded default (SQLite), including the SIGKILL crash test;
#   2. the store conformance suite and the API tests again on a real PostgreSQL 15, started here
#      from the installed binaries on a throwaway cluster;
#   3. the object store's tests again on a real S3-compatible server (moto, scripts/s3.sh);
#   4. a schemathesis fuzz run over the OpenAPI document against a real demo server (zero 5xx);
#   and clippy (with incompatible_msrv) first, the market simulation on both stores (release
#   build; docs/SIMULATION.md).
# Needs: cargo, PostgreSQL 15 binaries (/usr/lib/postgresql/15/bin), python3 with venv, bubblewrap
# and slirp4netns (installed here with apt-get when missing), and root for a real single-node
# Slurm (started by scripts/slurm.sh, which installs its Debian packages when missing): the Slurm
# backend's tests run real jobs through it and are required to (SUANLI_REQUIRE_SLURM=1).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

work=$(mktemp -d /tmp/suanli-test.XXXXXX)
pg_port=$((56000 + RANDOM % 2000))
s3_port=$((58000 + RANDOM % 2000))
cleanup() {
  scripts/pg.sh stop "$work/pg" || true
  scripts/s3.sh stop "$work/s3" || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  echo "== installing PostgreSQL 15"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi

if ! command -v bwrap >/dev/null 2>&1; then
  echo "== installing bubblewrap (the local backend's sandbox; its tests require it)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
fi

if ! command -v slirp4netns >/dev/null 2>&1; then
  echo "== installing slirp4netns (the network of its own a job asking for one gets)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slirp4netns >/dev/null
fi
# slirp4netns opens /dev/net/tun as the job's user; its usual mode is 0666 (some containers
# create it 0600).
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ] && [ "$(id -u)" = 0 ]; then
  chmod 0666 /dev/net/tun
fi

echo "== Slurm (single node, for the Slurm backend's tests)"
scripts/slurm.sh start tuned
export SUANLI_REQUIRE_SLURM=1

# Every platform's packages (the tidy test reads `cargo metadata --offline`, which needs the
# Windows- and macOS-only crates object_store's dependencies name, never built here).
cargo fetch --locked
echo "== cargo clippy (every lint, and incompatible_msrv against the declared rust-version)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test --workspace (SQLite)"
cargo test --workspace --locked

echo "== market simulation: 1,000 seeds x 1,000 steps on SQLite (docs/SIMULATION.md)"
cargo build --release --locked -q -p suanli-sim
target_dir=${CARGO_TARGET_DIR:-$root/target}
"$target_dir/release/suanli-sim" --seeds "${SIM_SEEDS:-0..1000}" --steps 1000 --threads 4 \
  --min-accepted-percent 20

echo "== PostgreSQL 15 on 127.0.0.1:$pg_port"
scripts/pg.sh start "$work/pg" "$pg_port"
export SUANLI_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "== store conformance and API tests on PostgreSQL"
cargo test --locked -p suanli-store -p suanli-server
echo "== market simulation: 50 seeds x 1,000 steps on PostgreSQL"
"$target_dir/release/suanli-sim" --seeds "${SIM_PG_SEEDS:-0..50}" --steps 1000 --threads 4 \
  --min-accepted-percent 20 --database-url "$SUANLI_TEST_DATABASE_URL"
unset SUANLI_TEST_DATABASE_URL

echo "== object store tests on a real S3-compatible server (moto) on 127.0.0.1:$s3_port"
scripts/s3.sh start "$work/s3" "$s3_port" suanli-test
SUANLI_TEST_S3="s3://suanli-test?endpoint=http://127.0.0.1:$s3_port&region=us-east-1" \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SUANLI_REQUIRE_S3=1 \
  cargo test --locked -p suanli-objects
scripts/s3.sh stop "$work/s3"

echo "== schemathesis fuzz over /api/v1/openapi.json"
"$root/scripts/fuzz.sh"
