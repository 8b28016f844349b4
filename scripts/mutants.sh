#!/usr/bin/env bash
# Breaks one rule of the market at a time and runs the market simulation until it notices:
# prints the table of mutation → the seed (and step) that caught it. Each mutation is applied to
# a scratch copy of the committed tree (git worktree), never to this one.
#
#   scripts/mutants.sh            # every mutation, up to 1,000 seeds × 1,000 steps each
#   SEEDS=0..200 scripts/mutants.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seeds=${SEEDS:-0..1000}
steps=${STEPS:-1000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d /tmp/suanli-mutants.XXXXXX)
cleanup() { git -C "$root" worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
git worktree add --detach "$work/tree" HEAD >/dev/null

# name | file | text to replace | replacement (Python string literals are not needed: plain text)
mutations=(
  "drop the funds check|crates/suanli-store/src/batch_ledger.rs|if guarded && d.balance() < amount as i64 {|if false \&\& guarded \&\& d.balance() < amount as i64 {"
  "pay the fee twice|crates/suanli-core/src/decide/settle.rs|            settlement.fee_micros,\n        ),|            settlement.fee_micros,\n        ),\n        (\n            TransferKind::Fee,\n            AccountRef::Operator(AccountKind::Fees),\n            settlement.fee_micros,\n        ),"
  "skip the capacity release|crates/suanli-store/src/ops/leases.rs|        for a in \&allocs {|        for a in allocs.iter().take(0) {"
  "bill past the time limit|crates/suanli-core/src/job.rs|            .min(self.dispatched_ms.saturating_add(limit_ms))\n|"
  "bill past the lease's end|crates/suanli-core/src/job.rs|            .min(self.lease_ends_ms)\n|"
)

printf '%-28s %-10s %s\n' "mutation" "caught by" "what the simulation saw"
status=0
for m in "${mutations[@]}"; do
  IFS='|' read -r name file from to <<<"$m"
  git -C "$work/tree" checkout -q -- .
  python3 - "$work/tree/$file" "$from" "$to" <<'PY'
import sys
path, old, new = sys.argv[1], sys.argv[2].replace('\\n', '\n').replace('\\&', '&'), sys.argv[3].replace('\\n', '\n').replace('\\&', '&')
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"the mutation's text is not in {path} exactly once: {old!r}")
open(path, 'w').write(text.replace(old, new))
PY
  if ! (cd "$work/tree" && cargo build --release -q -p suanli-sim 2>"$work/build.log"); then
    cat "$work/build.log"; exit 1
  fi
  out=$("$CARGO_TARGET_DIR/release/suanli-sim" --seeds "$seeds" --steps "$steps" --threads 4 --dir /dev/shm 2>&1 || true)
  caught=$(grep -m1 -o 'seed [0-9]* failed at step [0-9]*' <<<"$out" || true)
  if [ -n "$caught" ]; then
    seed=$(awk '{print $2}' <<<"$caught"); step=$(awk '{print $6}' <<<"$caught")
    why=$(grep -A1 -m1 'failed at step' <<<"$out" | tail -1 | cut -c1-110)
    printf '%-28s %-10s %s\n' "$name" "$seed@$step" "$why"
  else
    printf '%-28s %-10s %s\n' "$name" "MISSED" "no seed of $seeds noticed"
    status=1
  fi
done
# The tree's own binary again, so that target/release/suanli-sim is this commit's.
(cd "$root" && cargo build --release -q -p suanli-sim)
exit $status
