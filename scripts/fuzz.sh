#!/usr/bin/env bash
# Fuzz every cargo-fuzz target in fuzz/ on stable Rust for SECONDS each (default 10).
#   scripts/fuzz.sh            # the short run done by the test command
#   scripts/fuzz.sh 3600       # a long campaign: an hour per target
#   TARGETS="handshake" scripts/fuzz.sh 60
# Starts from the tracked seeds in fuzz/seeds/<target>/ (the corpus grows in fuzz/corpus/,
# git-ignored) with the target's dictionary fuzz/<target>.dict. Without AddressSanitizer
# (`-s none`: no nightly needed). Any crash is copied into fuzz/seeds/<target>/ so that
# `cargo test -p homeroom-protocol` replays it from then on, and the script fails.
# Extra libFuzzer flags: FUZZ_ARGS="-max_len=65536" scripts/fuzz.sh 60
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-10}"
TARGETS="${TARGETS:-frame_decoder message handshake change_import invite_code relay_session}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

summary=()
failed=()
for t in $TARGETS; do
  echo "== fuzz $t for ${SECONDS_PER_TARGET}s"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t/last-run.log"
  # Seeds are read-only input: new inputs go to the first directory, fuzz/corpus/<t>.
  set +e
  # shellcheck disable=SC2086
  cargo fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -dict="fuzz/$t.dict" \
    -print_final_stats=1 ${FUZZ_ARGS:-} 2>&1 | tee "$log" | grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|==[0-9]+==|SUMMARY|stat::)|panicked|Crash|deadly' || true
  status=${PIPESTATUS[0]}
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  per_sec=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  summary+=("$t: ${runs:-?} execs (${per_sec:-?}/s), limit ${SECONDS_PER_TARGET}s, exit $status")
  found=0
  for a in fuzz/artifacts/"$t"/crash-* fuzz/artifacts/"$t"/oom-* fuzz/artifacts/"$t"/timeout-* fuzz/artifacts/"$t"/slow-unit-*; do
    [ -e "$a" ] || continue
    mv "$a" "fuzz/seeds/$t/"
    echo "!! $t: $(basename "$a") moved to fuzz/seeds/$t/ (reproduce: cargo fuzz run -s none $t fuzz/seeds/$t/$(basename "$a"))"
    found=1
  done
  if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
    failed+=("$t")
  fi
done

echo
echo "== fuzz summary"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "!! failing targets: ${failed[*]}"
  exit 1
fi
