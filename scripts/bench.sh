#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md, reproduced: builds in release mode, starts the emulator as its own process
# (a fresh one per scenario, so each scenario's CPU time and peak memory are its own), drives it with
# iothub-loadgen (another process, over loopback), runs the same request/response load through Mosquitto as
# the anchor, and writes the results table with the machine it ran on into BENCHMARKS.md.
#
# Usage: scripts/bench.sh            full run (about 5 minutes; 19,000 connections; the query bench over 1M twins)
#        scripts/bench.sh --quick    debug build, 100 devices, a few seconds per scenario: a smoke run (CI) that
#                                    prints the numbers and writes nothing
# Needs python3 and openssl; installs Debian's mosquitto for the anchor when it is missing (skipped with a
# note when it cannot be installed).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
quick=false
[ "${1:-}" = "--quick" ] && quick=true

if $quick; then
  devices=100; held=100; jobs_devices=100; seconds=2; runs=1
else
  devices=1000; held=19000; jobs_devices=10000; seconds=10; runs=3
fi
seed_count=$(( held > jobs_devices ? held : jobs_devices ))
https_port=18443
mqtt_port=18883
amqp_port=15671
mosquitto_port=18884
sources="127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5"

if $quick; then
  echo "== building (debug: a smoke run)"
  cargo build --quiet -p iothub-emulator -p iothub-loadgen
  emulator="$root/target/debug/iothub-emulator"
  loadgen="$root/target/debug/iothub-loadgen"
else
  echo "== building (release)"
  cargo build --release --quiet -p iothub-emulator -p iothub-loadgen
  emulator="$root/target/release/iothub-emulator"
  loadgen="$root/target/release/iothub-loadgen"
fi

work="$(mktemp -d)"
emulator_pid=""
mosquitto_pid=""
cleanup() {
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null || true
  [ -n "$mosquitto_pid" ] && kill "$mosquitto_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
results="$work/results.txt"
: >"$results"

echo "== seed: $seed_count devices with keys"
python3 - "$work/devices.json" "$seed_count" <<'PY'
import base64, json, os, sys
path, count = sys.argv[1], int(sys.argv[2])
key = lambda: base64.b64encode(os.urandom(32)).decode()
devices = [{"deviceId": f"sim-{i:06d}", "authentication": {"symmetricKey": {"primaryKey": key(), "secondaryKey": key()}}}
           for i in range(count)]
json.dump({"devices": devices}, open(path, "w"))
PY

# CPU seconds (user + system) and peak resident memory (KiB) of a process.
cpu_seconds() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }
peak_rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Starts a fresh emulator on a fresh copy of the seeded data dir and waits for its banner. A copy per scenario: what
# one scenario stores (the telemetry kept for the Event Hubs endpoint, say) must not weigh on the next one's memory.
start_emulator() {
  rm -rf "$work/data"
  if [ -d "$work/seeded" ]; then cp -a "$work/seeded" "$work/data"; fi
  "$emulator" --data-dir "$work/data" --https-port "$https_port" --mqtt-port "$mqtt_port" --amqp-port "$amqp_port" \
    --seed "$work/devices.json" \
    >"$work/banner.txt" 2>"$work/emulator.log" &
  emulator_pid=$!
  for _ in $(seq 1 600); do
    grep -q "Python" "$work/banner.txt" 2>/dev/null && break
    kill -0 "$emulator_pid" 2>/dev/null || { cat "$work/emulator.log" >&2; exit 1; }
    sleep 0.05
  done
  connection_string="$(grep -o 'HostName=[^ ]*' "$work/banner.txt" | head -n 1)"
  event_hub_connection_string="$(grep -o 'Endpoint=sb://[^ ]*' "$work/banner.txt" | head -n 1)"
}

stop_emulator() {
  kill -TERM "$emulator_pid" 2>/dev/null || true
  wait "$emulator_pid" 2>/dev/null || true
  emulator_pid=""
}

lg() {
  IOTHUB_EVENTHUB_CONNECTION_STRING="$event_hub_connection_string" "$loadgen" --mqtt "127.0.0.1:$mqtt_port" --https "127.0.0.1:$https_port" --amqp "127.0.0.1:$amqp_port" --ca "$work/data/ca.pem" \
    --devices "$work/devices.json" --service "$connection_string" --source-ip "$sources" "$@"
}

# Runs one scenario against a fresh emulator: `scenario <name> <loadgen args...>`. Appends the loadgen's RESULT
# lines, tagged with the name, and the emulator's CPU time and peak memory.
scenario() {
  local name="$1"; shift
  start_emulator
  local before; before="$(cpu_seconds "$emulator_pid")"
  echo "== $name: iothub-loadgen $*"
  lg "$@" >"$work/$name.out" 2>"$work/$name.err" || { echo "   failed:"; tail -n 5 "$work/$name.err"; }
  grep -E '^(RESULT|connected|received)' "$work/$name.out" | sed 's/^/   /'
  local after; after="$(cpu_seconds "$emulator_pid")"
  grep '^RESULT' "$work/$name.out" | sed "s/^RESULT /RESULT run=$name /" >>"$results"
  echo "RESULT run=$name scenario=emulator-process cpu_seconds=$(python3 -c "print(round($after - $before, 2))") peak_rss_kib=$(peak_rss "$emulator_pid")" >>"$results"
  stop_emulator
}

# The seeded data dir every scenario starts from.
start_emulator
stop_emulator
cp -a "$work/data" "$work/seeded"

# Devices connected and held: the emulator's memory per connection is read while they are held.
# `held_connections <name> <count> [loadgen options before the command]`
held_connections() {
  local name="$1" count="$2"; shift 2
  start_emulator
  local base_rss; base_rss="$(rss "$emulator_pid")"
  echo "== $name: $count devices connected and held"
  lg --count "$count" "$@" connect --hold 5 >"$work/$name.out" 2>"$work/$name.err" &
  local loadgen_pid=$!
  for _ in $(seq 1 600); do
    grep -q '^connected' "$work/$name.out" 2>/dev/null && break
    sleep 0.1
  done
  sleep 2
  local held_rss; held_rss="$(rss "$emulator_pid")"
  wait "$loadgen_pid" || true
  grep -E '^(RESULT|connected)' "$work/$name.out" | sed 's/^/   /'
  grep '^RESULT' "$work/$name.out" | sed "s/^RESULT /RESULT run=$name /" >>"$results"
  local per_connection=$(( (held_rss - base_rss) * 1024 / count ))
  echo "   emulator memory: ${base_rss} KiB idle, ${held_rss} KiB with $count held: $per_connection bytes per connection"
  echo "RESULT run=$name scenario=emulator-memory base_kib=$base_rss held_kib=$held_rss per_connection_bytes=$per_connection" >>"$results"
  stop_emulator
}
held_connections connect "$held"
# AMQP devices (TLS, no SASL, a put-token on $cbs, a session with telemetry and method links).
held_connections amqp-connect "$devices" --transport amqp

scenario methods-idle --count "$devices" methods --callers 1 --seconds "$seconds"
scenario methods-load --count "$devices" methods --callers 64 --seconds "$seconds"
scenario methods-10k --count "$devices" methods --callers 64 --seconds "$seconds" --rate 10000
last_job_device="$(printf 'sim-%06d' "$jobs_devices")"
scenario jobs --count "$jobs_devices" jobs --runs "$runs" --condition "deviceId < '$last_job_device'"
scenario twin-patch-load --count "$devices" twin-patch --callers 64 --seconds "$seconds"
scenario twin-patch-10k --count "$devices" twin-patch --callers 64 --seconds "$seconds" --rate 10000
scenario reported --count "$devices" reported --seconds "$seconds"
scenario telemetry-30k --count "$devices" telemetry --seconds "$seconds" --rate-per-device 30
scenario telemetry-load --count "$devices" telemetry --seconds "$seconds"
# The same device loads with the devices on AMQP (the .NET SDK's default transport) instead of MQTT.
scenario amqp-methods-load --count "$devices" --transport amqp methods --callers 64 --seconds "$seconds"
scenario amqp-telemetry-load --count "$devices" --transport amqp telemetry --seconds "$seconds"
scenario c2d-load --count "$devices" c2d --senders 64 --seconds "$seconds"
scenario c2d-10k --count "$devices" c2d --senders 64 --seconds "$seconds" --rate 10000
scenario eventhubs-load --count "$devices" events --seconds "$seconds"
scenario eventhubs-10k --count "$devices" events --seconds "$seconds" \
  --rate-per-device "$(python3 -c "print(10000 / $devices)")"

# The anchor: the same request/response load through Mosquitto, TLS on both sides, its certificate issued by the
# emulator's CA so the load generator trusts it the same way.
if ! command -v mosquitto >/dev/null 2>&1; then
  apt-get install -y -q mosquitto >/dev/null 2>&1 || true
fi
mosquitto_bin="$(command -v mosquitto || ls /usr/sbin/mosquitto 2>/dev/null || true)"
if [ -n "$mosquitto_bin" ]; then
  mkdir -p "$work/mosquitto"
  chmod a+rx "$work" "$work/mosquitto"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$work/mosquitto/key.pem" -out "$work/mosquitto/req.csr" 2>/dev/null
  printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" >"$work/mosquitto/ext.cnf"
  openssl x509 -req -in "$work/mosquitto/req.csr" -CA "$work/data/ca.pem" -CAkey "$work/data/ca-key.pem" \
    -CAcreateserial -out "$work/mosquitto/cert.pem" -days 2 -extfile "$work/mosquitto/ext.cnf" 2>/dev/null
  chmod a+r "$work/mosquitto/"*.pem
  cat >"$work/mosquitto/mosquitto.conf" <<EOF
listener $mosquitto_port 127.0.0.1
allow_anonymous true
certfile $work/mosquitto/cert.pem
keyfile $work/mosquitto/key.pem
max_connections -1
persistence false
log_type error
EOF
  anchor() {
    local name="$1"; shift
    "$mosquitto_bin" -c "$work/mosquitto/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    mosquitto_pid=$!
    sleep 0.5
    echo "== $name (Mosquitto): iothub-loadgen echo $*"
    "$loadgen" --mqtt "127.0.0.1:$mosquitto_port" --ca "$work/data/ca.pem" --source-ip "$sources" echo "$@" \
      >"$work/$name.out" 2>"$work/$name.err" || { echo "   failed:"; tail -n 5 "$work/$name.err"; }
    grep '^RESULT' "$work/$name.out" | sed 's/^/   /'
    grep '^RESULT' "$work/$name.out" | sed "s/^RESULT /RESULT run=$name /" >>"$results"
    echo "RESULT run=$name scenario=mosquitto-process cpu_seconds=$(cpu_seconds "$mosquitto_pid") peak_rss_kib=$(peak_rss "$mosquitto_pid")" >>"$results"
    kill "$mosquitto_pid" 2>/dev/null || true
    wait "$mosquitto_pid" 2>/dev/null || true
    mosquitto_pid=""
  }
  anchor mosquitto-idle --responders "$devices" --callers 1 --seconds "$seconds"
  anchor mosquitto-load --responders "$devices" --callers 64 --seconds "$seconds"
  anchor mosquitto-10k --responders "$devices" --callers 64 --seconds "$seconds" --rate 10000
else
  echo "== Mosquitto is not installed and could not be installed: no anchor figures"
fi

# Start-up with 100,000 persisted devices: seed once, then time fresh starts until the banner.
startup_devices=100000
$quick && startup_devices=1000
echo "== start-up with $startup_devices persisted devices"
python3 - "$work/startup-seed.json" "$startup_devices" <<'PY'
import base64, json, os, sys
path, count = sys.argv[1], int(sys.argv[2])
key = base64.b64encode(os.urandom(32)).decode()
json.dump({"devices": [{"deviceId": f"boot-{i:06d}", "authentication": {"symmetricKey": {"primaryKey": key, "secondaryKey": key}}}
                       for i in range(count)]}, open(path, "w"))
PY
"$emulator" --data-dir "$work/startup" --https-port "$https_port" --mqtt-port "$mqtt_port" --amqp-port "$amqp_port" --seed "$work/startup-seed.json" \
  >"$work/startup-banner.txt" 2>/dev/null &
emulator_pid=$!
for _ in $(seq 1 1200); do grep -q "Python" "$work/startup-banner.txt" 2>/dev/null && break; sleep 0.05; done
stop_emulator
best=""
for attempt in 1 2 3; do
  begin="$(date +%s%N)"
  "$emulator" --data-dir "$work/startup" --https-port "$https_port" --mqtt-port "$mqtt_port" --amqp-port "$amqp_port" >"$work/startup-banner.txt" 2>/dev/null &
  emulator_pid=$!
  until grep -q "Python" "$work/startup-banner.txt" 2>/dev/null; do sleep 0.005; done
  took=$(( ($(date +%s%N) - begin) / 1000000 ))
  echo "   attempt $attempt: $took ms to the banner ($(head -n 1 "$work/startup-banner.txt" | grep -o '([0-9]* ms)'))"
  [ -z "$best" ] || [ "$took" -lt "$best" ] && best="$took"
  stop_emulator
done
echo "RESULT run=startup scenario=startup devices=$startup_devices best_ms=$best" >>"$results"

# The Event Hubs-compatible log read back at start: telemetry written back to back, then the hub restarted on the
# same data dir. Memory after the restart should be what it was once the events were written, not more.
echo "== restart with the telemetry of a $seconds s load kept"
start_emulator
lg --count "$devices" telemetry --seconds "$seconds" >"$work/reload.out" 2>"$work/reload.err" || tail -n 5 "$work/reload.err"
sleep 1
written_rss="$(rss "$emulator_pid")"
events="$(grep -o 'scenario=telemetry ops=[0-9]*' "$work/reload.out" | grep -o '[0-9]*$' || echo 0)"
kill -TERM "$emulator_pid"; wait "$emulator_pid" 2>/dev/null || true
begin="$(date +%s%N)"
"$emulator" --data-dir "$work/data" --https-port "$https_port" --mqtt-port "$mqtt_port" --amqp-port "$amqp_port" \
  >"$work/banner.txt" 2>"$work/emulator.log" &
emulator_pid=$!
until grep -q "Python" "$work/banner.txt" 2>/dev/null; do sleep 0.005; done
took=$(( ($(date +%s%N) - begin) / 1000000 ))
sleep 1
reloaded_rss="$(rss "$emulator_pid")"
echo "   $events events: ${written_rss} KiB once written; restarted in $took ms, ${reloaded_rss} KiB (peak $(peak_rss "$emulator_pid") KiB)"
echo "RESULT run=reload scenario=reload events=$events written_kib=$written_rss start_ms=$took reloaded_kib=$reloaded_rss peak_kib=$(peak_rss "$emulator_pid")" >>"$results"
stop_emulator

# Queries over 100k and 1M twins (in-process: the query engine alone).
if ! $quick; then
  echo "== queries over 100k and 1M twins"
  cargo bench --quiet -p iothub-emulator --bench query_scale 2>/dev/null | tee "$work/query.out" | sed 's/^/   /'
  echo "== configurations applied to 100k twins"
  cargo bench --quiet -p iothub-emulator --bench configuration_apply 2>/dev/null | tee "$work/configurations.out" | sed 's/^/   /'
fi

if $quick; then
  echo "== quick run: numbers above, BENCHMARKS.md left as it is"
  exit 0
fi

python3 "$root/scripts/bench_report.py" "$results" "$work/query.out" "$work/configurations.out" >"$root/BENCHMARKS.md"
echo "== BENCHMARKS.md written"
