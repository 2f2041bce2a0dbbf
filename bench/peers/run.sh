#!/usr/bin/env bash
# Homeroom against the alternatives, side by side, in one run on this machine (issue 8).
#
#   bench/peers/run.sh            # full run (W1 100 posts, W2 10/50/100 classes × 10 s,
#                                 #   W3 1,000 entries × 30 signatures, memory with 1,000 devices)
#   bench/peers/run.sh --quick    # small sizes, ~3-4 min after the builds (smoke test)
#
# Installs and builds what it needs (npm ci; cargo build --release of the bench-only samod
# server in bench/peers/samod-server, target dir bench/peers/target; the homeroom relay and its
# bench in the main workspace), then runs the same workloads on:
#   1. Homeroom, durable (the relay as shipped: fsync before Saved),
#   2. Homeroom with durability off (relay config `unsafe_no_fsync = true`; W1, W2, W4 only),
#   3. @automerge/automerge-repo-sync-server (Node),
#   4. samod (Rust) behind an axum WebSocket endpoint,
# and prints ONE table with ratios. JSON results stay in bench/peers/results/.
# Environment: PEERS_W6 (devices in the memory run; default 1000, quick 200), PEERS_W2
# (comma-separated class counts, full run only).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
QUICK=""
[[ "${1:-}" == "--quick" ]] && QUICK=1
SUFFIX=${QUICK:+-quick}
RES="$HERE/results"
mkdir -p "$RES"

echo "== install: npm (bench/peers, locked versions), samod server, homeroom relay + bench" >&2
# `npm install` with the committed lockfile rather than `npm ci`: npm 11 leaves cbor-extract's
# optional platform packages out of the lockfile and `npm ci` then refuses it as out of sync.
(cd "$HERE" && npm install --no-audit --no-fund --loglevel=error 2>&1 | grep -v "Unknown user config" >&2 || true)
[[ -d "$HERE/node_modules/@automerge/automerge-repo-sync-server" ]] || { echo "npm install failed" >&2; exit 1; }
(cd "$HERE/samod-server" && cargo build --release --quiet >&2)
(cd "$ROOT" && cargo build --release --quiet -p homeroom-relay --bin homeroom-relay >&2)
(cd "$ROOT" && cargo bench --no-run --quiet -p homeroom-e2e --bench relay >&2)
# Flush the builds' writes before measuring: otherwise the first system measured shares the
# disk (and its fsyncs) with the kernel's writeback of freshly linked binaries.
sync
sleep 2

W6=${PEERS_W6:-$([[ -n "$QUICK" ]] && echo 200 || echo 1000)}
W2=${PEERS_W2:-10,50,100}
hr_env=(HOMEROOM_BENCH_W6="$W6")
[[ -n "$QUICK" ]] && hr_env+=(HOMEROOM_BENCH_QUICK=1) || hr_env+=(HOMEROOM_BENCH_W2="$W2")
drv=(--w6 "$W6")
[[ -n "$QUICK" ]] && drv+=(--quick) || drv+=(--w2 "$W2")

start=$(date +%s)
echo "== 1/4 Homeroom (durable)" >&2
(cd "$ROOT" && env "${hr_env[@]}" HOMEROOM_BENCH_JSON="$RES/homeroom$SUFFIX.json" \
  cargo bench --quiet -p homeroom-e2e --bench relay > "$RES/homeroom$SUFFIX.log" 2>&1) \
  || { tail -20 "$RES/homeroom$SUFFIX.log" >&2; exit 1; }
echo "== 2/4 Homeroom (durability off: unsafe_no_fsync = true; W1, W2, W4)" >&2
(cd "$ROOT" && env "${hr_env[@]}" HOMEROOM_BENCH_W6=0 HOMEROOM_BENCH_W3=0 \
  HOMEROOM_BENCH_RELAY_CONFIG="unsafe_no_fsync = true" \
  HOMEROOM_BENCH_JSON="$RES/homeroom-nofsync$SUFFIX.json" \
  cargo bench --quiet -p homeroom-e2e --bench relay > "$RES/homeroom-nofsync$SUFFIX.log" 2>&1) \
  || { tail -20 "$RES/homeroom-nofsync$SUFFIX.log" >&2; exit 1; }
for s in js samod; do
  echo "== $([[ $s == js ]] && echo 3/4 automerge-repo-sync-server || echo 4/4 samod)" >&2
  (cd "$HERE" && node --import ./client-throttle-hook.mjs driver.mjs --server "$s" "${drv[@]}" \
    --out "$RES/$s$SUFFIX.json" 2> "$RES/$s$SUFFIX.log") \
    || { tail -20 "$RES/$s$SUFFIX.log" >&2; exit 1; }
done
echo "== all workloads ran in $(( $(date +%s) - start )) s (after the builds)" >&2
echo
node "$HERE/report.mjs" "$RES/homeroom$SUFFIX.json" "$RES/homeroom-nofsync$SUFFIX.json" \
  "$RES/js$SUFFIX.json" "$RES/samod$SUFFIX.json"
