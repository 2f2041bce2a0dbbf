#!/usr/bin/env bash
# Runs every test in the repository. Installs what the tests need on a fresh Debian 12 machine
# with the Rust toolchain: nothing else is assumed. Usage: scripts/test.sh
# Long soaks, fuzz campaigns and benchmarks live beside it: see docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n== %s ==\n' "$*"; }

step "Rust: build and test the whole workspace"
cargo test --workspace --all-targets --no-fail-fast

if [ -x scripts/test-more.sh ]; then
  scripts/test-more.sh
fi
step "all tests passed"
