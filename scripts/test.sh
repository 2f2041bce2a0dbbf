#!/usr/bin/env bash
# Runs every test in the repository, installing what the tests need on a fresh Debian 12
# machine with the Rust toolchain. Usage: scripts/test.sh
#
# 1. cargo test over the whole workspace, all targets: unit and integration tests, the
#    simulated-network runs, the kill -9 store loop, the real relay process tests, the
#    end-to-end device tests, the fuzz-seed regression gate — and every benchmark once in
#    its quick mode (HOMEROOM_BENCH_QUICK=1), so benchmarks cannot rot.
# 2. the mobile bindings: Python (pytest) and Kotlin/JVM tests against a real relay, and the
#    Swift checks (scripts/test-bindings.sh installs kotlinc, JNA and pytest if missing).
# 3. a short fuzz run of every cargo-fuzz target (installs cargo-fuzz if missing).
# 4. the side-by-side comparison with automerge-repo-sync-server and samod in its quick mode
#    (bench/peers/run.sh --quick installs them with npm and cargo); HOMEROOM_SKIP_PEERS=1
#    skips it.
#
# Longer runs live beside this (docs/testing.md): `HOMEROOM_SEEDS=200 cargo test -p
# homeroom-sim` (simulation soak), `HOMEROOM_CHAOS_LONG=1 cargo test -p homeroom-e2e --test
# chaos --test crashes` (long chaos and crash runs), `scripts/fuzz.sh 3600` (fuzz campaign),
# `cargo bench` (full benchmarks), `bench/peers/run.sh` (full comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export HOMEROOM_BENCH_QUICK=1
# A one-shot run gains nothing from incremental state, which costs GBs of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
FUZZ_SECONDS="${FUZZ_SECONDS:-5}"

step() { printf '\n== %s ==\n' "$*"; }
started=$(date +%s)

step "Rust: build and test the whole workspace (benchmarks in quick mode)"
cargo test --workspace --all-targets --no-fail-fast

step "Bindings: Python, Kotlin/JVM and Swift checks against a real relay"
scripts/test-bindings.sh

step "Fuzzing: ${FUZZ_SECONDS}s per target"
scripts/fuzz.sh "$FUZZ_SECONDS"

if [ "${HOMEROOM_SKIP_PEERS:-0}" != 1 ]; then
    step "Comparison with automerge-repo-sync-server and samod (quick)"
    bench/peers/run.sh --quick
fi

step "all tests passed in $(( $(date +%s) - started ))s"
