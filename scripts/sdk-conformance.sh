#!/usr/bin/env bash
# Runs Microsoft's unmodified Azure IoT SDKs (and the tutorial's apps written with our Rust clients) against a
# freshly started emulator and prints a PASS/FAIL table ending with "N passed, M failed".
#
# The SDKs dial 443 (service), 5671 (service AMQP) and 8883 (devices) at HostName=localhost, so the emulator must
# bind those ports: run as root, or give the binary CAP_NET_BIND_SERVICE. Needs node/npm (the Node SDK packages are installed
# with `npm ci` from the lockfile in conformance/node) and python3 (the Python SDKs are installed into
# conformance/python/.venv from conformance/python/requirements.lock).
#
# Usage: scripts/sdk-conformance.sh [path/to/iothub-emulator]   (default: builds and uses target/debug)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bin="${1:-}"
if [ -z "$bin" ]; then
  cargo build --quiet -p iothub-emulator
  bin="$root/target/debug/iothub-emulator"
fi

work="$(mktemp -d)"
emulator_pid=""
cleanup() {
  if [ -n "$emulator_pid" ] && kill -0 "$emulator_pid" 2>/dev/null; then
    kill -TERM "$emulator_pid" 2>/dev/null || true
    wait "$emulator_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Starts the emulator on the default ports with the throw-away data dir (and any extra flags), and waits for its
# banner.
start_emulator() {
  "$bin" --data-dir "${DATA_DIR:-$work/data}" --seed "${SEED:-$root/fixtures/tutorial-seed.json}" "$@" \
    >"$work/banner.txt" 2>"$work/emulator.log" &
  emulator_pid=$!
  for _ in $(seq 1 100); do
    if grep -q "Python" "$work/banner.txt" 2>/dev/null; then return; fi
    if ! kill -0 "$emulator_pid" 2>/dev/null; then
      echo "the emulator did not start:" >&2
      cat "$work/emulator.log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

stop_emulator() {
  kill -TERM "$emulator_pid" 2>/dev/null || true
  wait "$emulator_pid" 2>/dev/null || true
  emulator_pid=""
}

# A second consumer group and plain AMQP on loopback for the Event Hubs scenarios.
start_emulator --consumer-group second --eventhubs-plain-port 5672
connection_string="$(grep -o 'HostName=[^ ]*' "$work/banner.txt" | head -n 1)"
eventhub_connection_string="$(grep -o 'Endpoint=sb://[^ ]*' "$work/banner.txt" | head -n 1)"
ca="$work/data/ca.pem"
if [ -z "$connection_string" ] || [ ! -f "$ca" ]; then
  echo "the emulator printed no connection string:" >&2
  cat "$work/banner.txt" "$work/emulator.log" >&2
  exit 1
fi

# The tutorial's jobs run with the registryReadWrite policy: build its connection string from the data dir.
jobs_connection_string="$(python3 - "$work/data/policies.json" "$connection_string" <<'PY'
import json, sys
policies = json.load(open(sys.argv[1]))["sharedAccessPolicies"]
host = sys.argv[2].split(";")[0]
rw = next(p for p in policies if p["keyName"] == "registryReadWrite")
print(f"{host};SharedAccessKeyName=registryReadWrite;SharedAccessKey={rw['primaryKey']}")
PY
)"

passed=0
failed=0
table="$work/table.txt"
: >"$table"

# Adds the "PASS name" / "FAIL name: why" lines of one conformance script's output to the table.
record() {
  local label="$1" out="$2" code="$3"
  local lines
  lines="$(grep -E '^(PASS|FAIL) ' "$out" || true)"
  if [ -z "$lines" ]; then
    echo "FAIL $label: produced no results (exit $code)" >>"$table"
    sed 's/^/    /' "$out" >>"$table"
    failed=$((failed + 1))
    return
  fi
  while IFS= read -r line; do
    echo "$line" | sed "s/^\(PASS\|FAIL\) /\1 $label\//" >>"$table"
    case "$line" in
      PASS*) passed=$((passed + 1)) ;;
      FAIL*) failed=$((failed + 1)) ;;
    esac
  done <<<"$lines"
  if [ "$code" -ne 0 ] && ! grep -q '^FAIL ' "$out"; then
    echo "FAIL $label: exited with $code" >>"$table"
    failed=$((failed + 1))
  fi
}

# Runs one conformance script to its end and records its results.
run_suite() {
  local label="$1"; shift
  local out="$work/$label.out"
  set +e
  "$@" >"$out" 2>&1
  local code=$?
  set -e
  record "$label" "$out" "$code"
}

# Runs restart scripts side by side: each connects its devices, makes its writes, prints READY and waits for a
# line on stdin. Once all are ready (or gone) the emulator is stopped with SIGTERM and started again on the same
# data dir and ports; then they are told to go on, and their results are recorded.
# Usage: run_restart_suites label1 'command 1' label2 'command 2' ...
run_restart_suites() {
  local labels=() pids=() fds=()
  while [ $# -gt 0 ]; do
    local label="$1" command="$2"; shift 2
    mkfifo "$work/$label.fifo"
    bash -c "$command" <"$work/$label.fifo" >"$work/$label.out" 2>&1 &
    pids+=($!)
    local fd
    exec {fd}>"$work/$label.fifo"
    fds+=("$fd")
    labels+=("$label")
  done
  local i
  for i in "${!labels[@]}"; do
    for _ in $(seq 1 600); do
      grep -q '^READY' "$work/${labels[$i]}.out" 2>/dev/null && break
      kill -0 "${pids[$i]}" 2>/dev/null || break
      sleep 0.1
    done
  done
  stop_emulator
  start_emulator
  for i in "${!labels[@]}"; do
    local fd="${fds[$i]}"
    echo go >&"$fd" || true
    exec {fd}>&-
  done
  for i in "${!labels[@]}"; do
    set +e
    wait "${pids[$i]}"
    local code=$?
    set -e
    record "${labels[$i]}" "$work/${labels[$i]}.out" "$code"
  done
}

(cd conformance/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
for suite in registry device jobs c2d modules edge bulk configurations; do
  run_suite "node-$suite" env IOTHUB_CONNECTION_STRING="$connection_string" NODE_EXTRA_CA_CERTS="$ca" \
    IOTHUB_JOBS_CONNECTION_STRING="$jobs_connection_string" \
    IOTHUB_EVENTHUB_CONNECTION_STRING="$eventhub_connection_string" node "conformance/node/$suite.js"
done
# Devices over AMQP (azure-iot-device-amqp: Amqp and AmqpWs): the tutorial's simDevice and jobs, telemetry read back,
# C2D settlements and the twin.
run_suite node-amqp-device env IOTHUB_CONNECTION_STRING="$connection_string" NODE_EXTRA_CA_CERTS="$ca" \
  IOTHUB_EVENTHUB_CONNECTION_STRING="$eventhub_connection_string" node conformance/node/amqp_device.js
# Telemetry read back through the Event Hubs-compatible endpoint (@azure/event-hubs).
run_suite node-eventhubs env IOTHUB_CONNECTION_STRING="$connection_string" NODE_EXTRA_CA_CERTS="$ca" \
  IOTHUB_EVENTHUB_CONNECTION_STRING="$eventhub_connection_string" IOTHUB_CONSUMER_GROUP_2=second \
  IOTHUB_EVENTHUB_PLAIN_PORT=5672 node conformance/node/eventhubs.js

venv=conformance/python/.venv
if [ ! -x "$venv/bin/python" ] || ! cmp -s conformance/python/requirements.lock "$venv/installed.lock"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r conformance/python/requirements.lock
  cp conformance/python/requirements.lock "$venv/installed.lock"
fi
run_suite python env IOTHUB_CONNECTION_STRING="$connection_string" REQUESTS_CA_BUNDLE="$ca" IOTHUB_CA_FILE="$ca" \
  IOTHUB_JOBS_CONNECTION_STRING="$jobs_connection_string" \
  "$venv/bin/python" conformance/python/sdk_conformance.py
run_suite python-modules env IOTHUB_CONNECTION_STRING="$connection_string" REQUESTS_CA_BUNDLE="$ca" \
  IOTHUB_CA_FILE="$ca" IOTHUB_EVENTHUB_CONNECTION_STRING="$eventhub_connection_string" \
  "$venv/bin/python" conformance/python/modules_conformance.py
# IoT Edge devices, their scopes and children (azure-iot-hub's registry manager).
run_suite python-edge env IOTHUB_CONNECTION_STRING="$connection_string" REQUESTS_CA_BUNDLE="$ca" \
  "$venv/bin/python" conformance/python/edge_conformance.py
# Bulk identity operations (POST /devices).
run_suite python-bulk env IOTHUB_CONNECTION_STRING="$connection_string" REQUESTS_CA_BUNDLE="$ca" \
  "$venv/bin/python" conformance/python/bulk_conformance.py
# Automatic device management (IoTHubConfigurationManager).
run_suite python-configurations env IOTHUB_CONNECTION_STRING="$connection_string" REQUESTS_CA_BUNDLE="$ca" \
  "$venv/bin/python" conformance/python/configurations_conformance.py
# uamqp (the service SDK's AMQP for cloud-to-device messages) trusts only SSL_CERT_FILE.
run_suite python-c2d env IOTHUB_CONNECTION_STRING="$connection_string" REQUESTS_CA_BUNDLE="$ca" SSL_CERT_FILE="$ca" \
  IOTHUB_CA_FILE="$ca" "$venv/bin/python" conformance/python/c2d_conformance.py
run_suite python-eventhubs env IOTHUB_CONNECTION_STRING="$connection_string" REQUESTS_CA_BUNDLE="$ca" \
  IOTHUB_CA_FILE="$ca" IOTHUB_EVENTHUB_CONNECTION_STRING="$eventhub_connection_string" IOTHUB_CONSUMER_GROUP_2=second \
  IOTHUB_EVENTHUB_PLAIN_PORT=5672 "$venv/bin/python" conformance/python/eventhubs_conformance.py

# The tutorial's apps written with the Rust clients (built by `cargo test`; built here when missing).
if [ ! -x target/debug/examples/sim_device ] || [ ! -x target/debug/examples/schedule_job_service ]; then
  cargo build --quiet -p iothub-device -p iothub-service --examples
fi
run_suite rust-tutorial env IOTHUB_CONNECTION_STRING="$connection_string" IOTHUB_CA_FILE="$ca" \
  conformance/rust/tutorial.sh

# Faults (POST /emulator/faults): a device dropped and refused, a 30 s hub-wide outage, a job whose method calls are
# not delivered; both SDKs ride them out with their own retry. An outage refuses everyone, so these run one after
# the other with nothing else on the hub; each removes its faults and devices when it ends.
run_suite node-faults env IOTHUB_CONNECTION_STRING="$connection_string" NODE_EXTRA_CA_CERTS="$ca" \
  IOTHUB_EVENTHUB_CONNECTION_STRING="$eventhub_connection_string" node conformance/node/faults.js
run_suite python-faults env IOTHUB_CONNECTION_STRING="$connection_string" REQUESTS_CA_BUNDLE="$ca" SSL_CERT_FILE="$ca" \
  IOTHUB_CA_FILE="$ca" IOTHUB_EVENTHUB_CONNECTION_STRING="$eventhub_connection_string" \
  "$venv/bin/python" conformance/python/faults_conformance.py

# Restarts: devices of both SDKs stay connected while the hub stops (SIGTERM) and starts again on the same data
# dir; they reconnect by themselves and find everything that was acknowledged.
run_restart_suites \
  node-restart "IOTHUB_CONNECTION_STRING='$connection_string' IOTHUB_EVENTHUB_CONNECTION_STRING='$eventhub_connection_string' NODE_EXTRA_CA_CERTS='$ca' node conformance/node/restart.js" \
  python-restart "IOTHUB_CONNECTION_STRING='$connection_string' IOTHUB_EVENTHUB_CONNECTION_STRING='$eventhub_connection_string' REQUESTS_CA_BUNDLE='$ca' IOTHUB_CA_FILE='$ca' '$venv/bin/python' conformance/python/restart_conformance.py"

# Throttling: the same hub restarted with one S1 unit's rates; past them the SDKs get their own throttling errors.
stop_emulator
start_emulator --throttle s1
if ! grep -q "throttled like one S1 unit" "$work/banner.txt"; then
  echo "FAIL throttle: the banner does not say the hub is throttled" >>"$table"
  failed=$((failed + 1))
fi
run_suite node-throttle env IOTHUB_CONNECTION_STRING="$connection_string" NODE_EXTRA_CA_CERTS="$ca" \
  IOTHUB_THROTTLE_TIER=s1 node conformance/node/throttle.js
run_suite python-throttle env IOTHUB_CONNECTION_STRING="$connection_string" REQUESTS_CA_BUNDLE="$ca" \
  IOTHUB_THROTTLE_TIER=s1 "$venv/bin/python" conformance/python/throttle_conformance.py

# The dashboard in Debian's headless Chromium, driven by playwright-core (pinned in conformance/node; it downloads
# no browser), on a fresh hub seeded with 10,000 devices so the pages are tried at a realistic size. The
# screenshots it takes are kept in $DASHBOARD_SCREENSHOTS (default target/dashboard-screenshots).
stop_emulator
python3 - "$work/fleet.json" <<'PY'
import json, sys
json.dump({"devices": [{"deviceId": f"fleet-{n:05d}"} for n in range(10000)]}, open(sys.argv[1], "w"))
PY
DATA_DIR="$work/dashboard-data" SEED="$work/fleet.json" start_emulator
dashboard_connection_string="$(grep -o 'HostName=[^ ]*' "$work/banner.txt" | head -n 1)"
dashboard_url="$(grep -o 'https://[^ ]*?token=[0-9a-f]*' "$work/banner.txt" | head -n 1)"
run_suite node-dashboard env IOTHUB_CONNECTION_STRING="$dashboard_connection_string" \
  IOTHUB_DASHBOARD_URL="$dashboard_url" NODE_EXTRA_CA_CERTS="$work/dashboard-data/ca.pem" IOTHUB_DASHBOARD_FLEET=10000 \
  SCREENSHOT_DIR="${DASHBOARD_SCREENSHOTS:-$root/target/dashboard-screenshots}" node conformance/node/dashboard.js

echo "SDK conformance against the emulator ($connection_string)" | sed 's/SharedAccessKey=[^;)]*/SharedAccessKey=***/'
cat "$table"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
