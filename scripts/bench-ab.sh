#!/usr/bin/env bash
# Interleaved A/B of scripts/bench.sh: the code at BASE (A) against the working tree (B), ROUNDS
# rounds of A then B on the same machine in the same hour, then the medians of the figures the
# goals are stated on. A refactoring must keep each ratio within 10 % of BASE's.
#
#   scripts/bench-ab.sh BASE [ROUNDS]        # e.g. scripts/bench-ab.sh d4bd2f1 3
#   SECONDS_PER_RUN (default 8); the jobs benchmarks are skipped (JOBS_N=0).
#   A_DIR, B_DIR: directories with release/suanli and release/suanli-bench built already (skips
#   the builds).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
base=${1:?usage: scripts/bench-ab.sh BASE [ROUNDS]}
rounds=${2:-3}
export SECONDS_PER_RUN=${SECONDS_PER_RUN:-8} JOBS_N=0 SKIP_BUILD=1
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d /tmp/suanli-ab.XXXXXX)
cleanup() { git -C "$root" worktree remove --force "$work/a-tree" >/dev/null 2>&1 || true; }
trap cleanup EXIT

mkdir -p "$work/A/release" "$work/B/release"
if [ -n "${A_DIR:-}" ] && [ -n "${B_DIR:-}" ]; then
  cp "$A_DIR/release/suanli" "$A_DIR/release/suanli-bench" "$work/A/release/"
  cp "$B_DIR/release/suanli" "$B_DIR/release/suanli-bench" "$work/B/release/"
else
  echo "== building A ($base) and B (the working tree), release"
  git worktree add --detach "$work/a-tree" "$base" >/dev/null
  (cd "$work/a-tree" && CARGO_TARGET_DIR=$target cargo build --release -q -p suanli -p suanli-bench)
  cp "$target/release/suanli" "$target/release/suanli-bench" "$work/A/release/"
  cargo build --release -q -p suanli -p suanli-bench
  cp "$target/release/suanli" "$target/release/suanli-bench" "$work/B/release/"
fi

for r in $(seq "$rounds"); do
  for side in A B; do
    echo "== round $r: $side"
    CARGO_TARGET_DIR="$work/$side" scripts/bench.sh "$work/$side-$r.jsonl" >"$work/$side-$r.log" 2>&1 \
      || { cat "$work/$side-$r.log"; exit 1; }
  done
done

python3 - "$work" "$rounds" "$base" <<'PY'
import json, statistics, sys
work, rounds, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def figures(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    purchases = [r for r in rows if r.get("bench") == "purchases"]
    sqlite = next(r for r in purchases if r["backend"] == "sqlite")
    naive = next(r for r in purchases if r["backend"] == "naive-sqlite")
    pg_purchases = next(r for r in purchases if r["backend"] == "postgres")
    pgbench = next(r for r in rows if r.get("bench") == "pgbench")
    ledger = {r["backend"]: r for r in rows if r.get("bench") == "ledger"}
    quote = next(r for r in rows if r.get("bench") == "quote")
    return {
        "purchases/s (SQLite)": sqlite["purchases_per_s"],
        "pgbench/s": pgbench["rate_per_s"],
        "purchases ÷ pgbench": sqlite["purchases_per_s"] / pgbench["rate_per_s"],
        "purchases ÷ naive": sqlite["purchases_per_s"] / naive["purchases_per_s"],
        "purchases p99 (ms)": sqlite["latency"]["p99_us"] / 1000,
        "ledger/s (SQLite)": ledger["sqlite"]["rate_per_s"],
        "ledger/s (PostgreSQL)": ledger["postgres"]["rate_per_s"],
        "quote p99 (µs)": quote["latency"]["p99_us"],
        "purchases/s (PostgreSQL)": pg_purchases["purchases_per_s"],
    }

runs = {side: [figures(f"{work}/{side}-{r}.jsonl") for r in range(1, rounds + 1)] for side in "AB"}
print(f"\n| figure | A ({base}) runs | B (this tree) runs | median A | median B | B ÷ A |")
print("|---|---|---|---|---|---|")
for key in runs["A"][0]:
    a = [r[key] for r in runs["A"]]
    b = [r[key] for r in runs["B"]]
    fmt = (lambda v: f"{v:.2f}") if max(a + b) < 100 else (lambda v: f"{v:,.0f}")
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {key} | {' / '.join(map(fmt, a))} | {' / '.join(map(fmt, b))} | {fmt(ma)} | {fmt(mb)} | {mb / ma:.2f} |")
PY
echo
echo "results and logs: $work"
