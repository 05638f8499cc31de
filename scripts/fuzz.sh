#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets: the MQTT decoder and session, the query language, SAS tokens,
# twin patches) for SECONDS each with cargo fuzz (needs the nightly toolchain and `cargo install cargo-fuzz`).
# Corpora grow in fuzz/corpus/<target>; a crash stops the run, its input lands in fuzz/artifacts/<target>, and
# it should become a case in emulator/src/fuzzing.rs's regression test.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default 600 seconds, every target)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(mqtt_decode mqtt_session query sas twin_patch)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
  echo "== $target for $seconds s"
  cargo +nightly fuzz run -O "$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
    | grep -E '^(Done|#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|panicked' || true
  if [ -d "artifacts/$target" ] && [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "CRASH in $target: $(ls "artifacts/$target")"
    exit 1
  fi
done
echo "no crashes"
