#!/usr/bin/env bash
# The crash test: a write workload against the emulator (twin patches from the service and from devices,
# creates and deletes one by one and in bulk, configuration creates and deletes, jobs), SIGKILL at a random moment,
# restart on the same data dir, and a check that every acknowledged write is there, versions only moved forward,
# every job ends, the targeted twins converge on what the configurations present say, and every acknowledged
# telemetry message is read back from the Event Hubs-compatible endpoint once. Repeats; prints one line per
# round and `RESULT scenario=crash-test iterations=N anomalies=M` (M must be 0).
#
# Usage: scripts/crash-test.sh [ITERATIONS]   (default 50; about 3 s per round)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p iothub-emulator -p iothub-crashtest
target/release/iothub-crashtest --emulator target/release/iothub-emulator --iterations "${1:-50}"
