#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets: the MQTT decoder and session, AMQP frames, the query language, SAS
# tokens, twin patches) for SECONDS each with cargo fuzz (needs the nightly toolchain and `cargo install cargo-fuzz`).
# Corpora grow in fuzz/corpus/<target>; a crash stops the run, its input lands in fuzz/artifacts/<target>, and
# it should become a case in the regression tests of emulator/src/fuzzing/.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default 600 seconds, every target)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(mqtt_decode mqtt_session amqp_frames query sas twin_patch)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
  echo "== $target for $seconds s"
  if [ "$target" = amqp_frames ] && [ ! -d corpus/amqp_frames ]; then
    # Seed the AMQP corpus with the hand-written cases (whole frames the fuzzer would take long to build).
    IOTHUB_AMQP_SEEDS="$PWD/corpus/amqp_frames" cargo test --manifest-path ../Cargo.toml -p iothub-emulator --lib \
      fuzzing::amqp::tests::amqp_regressions -q >/dev/null
  fi
  cargo +nightly fuzz run -O "$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
    | grep -E '^(Done|#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|panicked' || true
  if [ -d "artifacts/$target" ] && [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "CRASH in $target: $(ls "artifacts/$target")"
    exit 1
  fi
done
echo "no crashes"
