#!/usr/bin/env bash
# The tutorial's two apps in Rust (clients/device/examples/sim_device.rs and
# clients/service/examples/schedule_job_service.rs) run exactly as the README says, against a running emulator
# that was started with --seed fixtures/tutorial-seed.json. Prints "PASS <name>" / "FAIL <name>: <why>" lines.
#
# Environment: IOTHUB_CONNECTION_STRING (hub owner), IOTHUB_CA_FILE (the emulator's ca.pem), EXAMPLES (the folder
# of the built examples, default target/debug/examples).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
examples="${EXAMPLES:-$root/target/debug/examples}"
host="$(echo "$IOTHUB_CONNECTION_STRING" | sed -n 's/.*HostName=\([^;]*\).*/\1/p')"
key="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['devices'][0]['authentication']['symmetricKey']['primaryKey'])" "$root/fixtures/tutorial-seed.json")"
device_cs="HostName=$host;DeviceId=myDeviceId;SharedAccessKey=$key"
out="$(mktemp -d)"
trap 'kill "$device_pid" 2>/dev/null; rm -rf "$out"' EXIT

IOTHUB_DEVICE_CONNECTION_STRING="$device_cs" "$examples/sim_device" >"$out/device.log" 2>&1 &
device_pid=$!
for _ in $(seq 1 100); do
  grep -q "Client connected" "$out/device.log" && break
  kill -0 "$device_pid" 2>/dev/null || break
  sleep 0.1
done
if grep -q "Client connected" "$out/device.log"; then
  echo "PASS sim_device-connects"
else
  echo "FAIL sim_device-connects: $(tr '\n' ' ' <"$out/device.log")"
  exit 1
fi

if "$examples/schedule_job_service" >"$out/service.log" 2>&1; then
  echo "PASS schedule_job_service-both-jobs-complete"
else
  echo "FAIL schedule_job_service-both-jobs-complete: $(tail -n 5 "$out/service.log" | tr '\n' ' ')"
fi
sleep 0.5
if grep -q "Locking Door!" "$out/device.log"; then
  echo "PASS sim_device-answers-lockDoor"
else
  echo "FAIL sim_device-answers-lockDoor: $(tr '\n' ' ' <"$out/device.log")"
fi
if grep -q '"building":"43"' "$out/device.log" && grep -q '"floor":3' "$out/device.log"; then
  echo "PASS sim_device-sees-desired-building-43-floor-3"
else
  echo "FAIL sim_device-sees-desired-building-43-floor-3: $(tr '\n' ' ' <"$out/device.log")"
fi
