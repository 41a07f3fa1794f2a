#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 300), starting from the
# committed seeds and what earlier runs found (corpus/, not committed).
# A crash stops the run with the failing input in artifacts/TARGET/.
# CI runs it briefly (`fuzz/run.sh 15`) so the targets keep building and a
# regression shows; run it longer by hand after changing a parser.
#
# Stable Rust, no sanitizer (`-s none`): Verge's parsers are safe Rust, so
# what the fuzzer looks for is panics, aborts, hangs (10 s per input) and
# the properties each target asserts.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-300}
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cargo fuzz build -s none -O
for target in $(cargo fuzz list); do
  corpus="corpus/$target"
  mkdir -p "$corpus"
  if [ -d "seeds/$target" ]; then
    cp -n seeds/"$target"/* "$corpus"/
  fi
  echo "fuzzing $target for ${seconds}s"
  # grep hides libFuzzer's chatter; the status is cargo fuzz's.
  set +e
  cargo fuzz run -s none -O "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)|panicked|ERROR|SUMMARY|Test unit written'
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/" >&2
    exit "$status"
  fi
done
