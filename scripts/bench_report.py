#!/usr/bin/env python3
"""Writes BENCHMARKS.md from the RESULT lines scripts/bench.sh collected (and the query bench's output).

Usage: bench_report.py RESULTS_FILE [QUERY_OUTPUT_FILE] > BENCHMARKS.md
"""

import datetime
import os
import platform
import re
import statistics
import subprocess
import sys


def parse(path):
    runs = {}
    for line in open(path):
        fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
        runs.setdefault(fields.get("run", "?"), {}).setdefault(fields.get("scenario", "?"), []).append(fields)
    return runs


def machine():
    cpu = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) / 1024 / 1024
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}; "
            f"commit {commit or 'unknown'}, {datetime.date.today().isoformat()}")


def main():
    runs = parse(sys.argv[1])
    query = open(sys.argv[2]).read() if len(sys.argv) > 2 and os.path.exists(sys.argv[2]) else ""
    configurations = open(sys.argv[3]).read() if len(sys.argv) > 3 and os.path.exists(sys.argv[3]) else ""

    def get(run, scenario, key, default="-"):
        rows = runs.get(run, {}).get(scenario, [])
        return rows[0].get(key, default) if rows else default

    def procs(run, other="loadgen-process"):
        e_cpu = get(run, "emulator-process", "cpu_seconds")
        e_rss = get(run, "emulator-process", "peak_rss_kib")
        l_cpu = get(run, other, "cpu_seconds")
        l_rss = get(run, other, "peak_rss_kib")
        mib = lambda k: f"{int(k) / 1024:.0f}" if k not in ("-", "") else "-"
        return f"{e_cpu} s, {mib(e_rss)} MiB | {l_cpu} s, {mib(l_rss)} MiB"

    def jobs(scenario):
        rows = runs.get("jobs", {}).get(scenario, [])
        secs = [float(r["seconds"]) for r in rows if "seconds" in r]
        if not secs:
            return "-"
        devices = rows[0].get("devices", "?")
        ok = all(r.get("status") == '"completed"' for r in rows)
        all_runs = ", ".join(f"{s * 1000:.0f}" for s in secs)
        return (f"{statistics.median(secs) * 1000:.0f} ms median over {len(secs)} runs ({all_runs} ms), "
                f"{devices} devices, {'all completed' if ok else 'NOT all completed'}")

    def ratio(ours, theirs):
        try:
            return f"{float(ours) / float(theirs):.2f}x"
        except (ValueError, ZeroDivisionError):
            return "-"

    connect = runs.get("connect", {})
    conn = connect.get("connect", [{}])[0]
    memory = connect.get("emulator-memory", [{}])[0]
    per_conn = int(memory.get("per_connection_bytes", "0") or 0)
    out = []
    out.append("# Benchmarks\n")
    out.append(f"Machine: {machine()}.\n")
    out.append("The emulator and the load generator (`iothub-loadgen`) run as separate processes on the same machine, over "
               "loopback with TLS everywhere; the emulator keeps its registry in a redb data dir (every acknowledged write "
               "durable). Each scenario gets a fresh emulator process on a fresh copy of the seeded data dir, so its CPU time and peak memory are its own. "
               "Latencies come from HDR histograms at the caller. Reproduce everything with `scripts/bench.sh` "
               "(`scripts/bench.sh --quick` for a smoke run); each row's command is below the table.\n")
    out.append("| scenario | target | measured | emulator CPU, peak RSS | load generator CPU, peak RSS |")
    out.append("| --- | --- | --- | --- | --- |")
    out.append(f"| devices connected (TLS + CONNECT + SAS + SUBSCRIBE) | 10,000 in <= 5 s; 19,000 held; <= 24 KB per connection | "
               f"10,000 after {conn.get('to10k_seconds', '-')} s; {conn.get('connected', '-')} in {conn.get('seconds', '-')} s, "
               f"{conn.get('failed', '-')} failed, all held; {per_conn} bytes ({per_conn / 1024:.1f} KiB) of emulator RSS per held connection | "
               f"- | {get('connect', 'loadgen-process', 'cpu_seconds')} s, {int(get('connect', 'loadgen-process', 'peak_rss_kib', '0')) / 1024:.0f} MiB |")
    out.append(f"| direct methods, 64 keep-alive callers back to back | >= 10,000/s sustained, p99 <= 10 ms | "
               f"{get('methods-load', 'methods', 'rate')}/s, p50 {get('methods-load', 'methods', 'p50_ms')} ms, p99 {get('methods-load', 'methods', 'p99_ms')} ms | {procs('methods-load')} |")
    out.append(f"| direct methods at 10,000/s (64 callers) | p99 <= 10 ms | "
               f"{get('methods-10k', 'methods', 'rate')}/s, p50 {get('methods-10k', 'methods', 'p50_ms')} ms, p99 {get('methods-10k', 'methods', 'p99_ms')} ms | {procs('methods-10k')} |")
    out.append(f"| direct method, one caller (idle) | p50 <= 0.3 ms | "
               f"p50 {get('methods-idle', 'methods', 'p50_ms')} ms, p99 {get('methods-idle', 'methods', 'p99_ms')} ms ({get('methods-idle', 'methods', 'rate')}/s) | {procs('methods-idle')} |")
    out.append(f"| method job over 10,000 connected devices | completed, all records written, <= 2 s | {jobs('method-job')} | {procs('jobs')} |")
    out.append(f"| twin-update job over 10,000 devices (desired notifications) | <= 0.5 s | {jobs('twin-job')} | (same run) |")
    out.append(f"| `PATCH /twins/{{id}}`, durable, 64 callers back to back | >= 10,000/s | "
               f"{get('twin-patch-load', 'twin-patch', 'rate')}/s, p99 {get('twin-patch-load', 'twin-patch', 'p99_ms')} ms | {procs('twin-patch-load')} |")
    out.append(f"| `PATCH /twins/{{id}}`, durable, at 10,000/s | p99 <= 5 ms | "
               f"{get('twin-patch-10k', 'twin-patch', 'rate')}/s, p50 {get('twin-patch-10k', 'twin-patch', 'p50_ms')} ms, p99 {get('twin-patch-10k', 'twin-patch', 'p99_ms')} ms | {procs('twin-patch-10k')} |")
    out.append(f"| reported-property patches from 1,000 devices (one in flight each) | >= 20,000/s | "
               f"{get('reported', 'reported', 'rate')}/s, p50 {get('reported', 'reported', 'p50_ms')} ms | {procs('reported')} |")
    out.append(f"| telemetry QoS 1 from 1,000 devices at 30 msg/s each | >= 30,000 msg/s, p99 <= 10 ms | "
               f"{get('telemetry-30k', 'telemetry', 'rate')}/s, p50 {get('telemetry-30k', 'telemetry', 'p50_ms')} ms, p99 {get('telemetry-30k', 'telemetry', 'p99_ms')} ms | {procs('telemetry-30k')} |")
    out.append(f"| telemetry QoS 1 from 1,000 devices back to back | (the ceiling) | "
               f"{get('telemetry-load', 'telemetry', 'rate')}/s, p99 {get('telemetry-load', 'telemetry', 'p99_ms')} ms | {procs('telemetry-load')} |")
    amqp_conn = runs.get("amqp-connect", {}).get("connect", [{}])[0]
    amqp_memory = runs.get("amqp-connect", {}).get("emulator-memory", [{}])[0]
    amqp_per_conn = int(amqp_memory.get("per_connection_bytes", "0") or 0)
    out.append(f"| 1,000 AMQP devices connected (TLS + put-token on $cbs + session, telemetry and method links) | beside the MQTT row | "
               f"{amqp_conn.get('connected', '-')} in {amqp_conn.get('seconds', '-')} s, {amqp_conn.get('failed', '-')} failed, all held; "
               f"{amqp_per_conn} bytes ({amqp_per_conn / 1024:.1f} KiB) of emulator RSS per held connection | "
               f"- | {get('amqp-connect', 'loadgen-process', 'cpu_seconds')} s, {int(get('amqp-connect', 'loadgen-process', 'peak_rss_kib', '0') or 0) / 1024:.0f} MiB |")
    out.append(f"| direct methods to 1,000 AMQP devices, 64 callers back to back | beside the MQTT row | "
               f"{get('amqp-methods-load', 'methods', 'rate')}/s, p50 {get('amqp-methods-load', 'methods', 'p50_ms')} ms, p99 {get('amqp-methods-load', 'methods', 'p99_ms')} ms | {procs('amqp-methods-load')} |")
    out.append(f"| telemetry from 1,000 AMQP devices back to back (accepted once stored) | beside the MQTT row | "
               f"{get('amqp-telemetry-load', 'telemetry', 'rate')}/s, p50 {get('amqp-telemetry-load', 'telemetry', 'p50_ms')} ms, p99 {get('amqp-telemetry-load', 'telemetry', 'p99_ms')} ms | {procs('amqp-telemetry-load')} |")
    out.append(f"| cloud-to-device messages sent over AMQP (64 links) to 1,000 MQTT devices, back to back | >= 10,000 msg/s | "
               f"{get('c2d-load', 'c2d-deliver', 'rate')}/s delivered ({get('c2d-load', 'c2d-deliver', 'received')} of {get('c2d-load', 'c2d-deliver', 'accepted')} accepted), "
               f"send-to-receive p50 {get('c2d-load', 'c2d-deliver', 'p50_ms')} ms, p99 {get('c2d-load', 'c2d-deliver', 'p99_ms')} ms | {procs('c2d-load')} |")
    out.append(f"| cloud-to-device messages at 10,000/s to 1,000 MQTT devices | p99 send-to-receive <= 10 ms | "
               f"{get('c2d-10k', 'c2d-deliver', 'rate')}/s, p50 {get('c2d-10k', 'c2d-deliver', 'p50_ms')} ms, p99 {get('c2d-10k', 'c2d-deliver', 'p99_ms')} ms; "
               f"accepted (durable) p99 {get('c2d-10k', 'c2d-send', 'p99_ms')} ms | {procs('c2d-10k')} |")
    out.append(f"| telemetry QoS 1 from 1,000 devices back to back, read by one Event Hubs consumer per partition | >= 30,000 msg/s end to end; ingest >= 70% of the telemetry row | "
               f"read {get('eventhubs-load', 'eventhubs-read', 'rate')}/s ({get('eventhubs-load', 'eventhubs-read', 'ops')} of {get('eventhubs-load', 'eventhubs-ingest', 'ops')} acknowledged), "
               f"ingest {get('eventhubs-load', 'eventhubs-ingest', 'rate')}/s; send-to-read p99 {get('eventhubs-load', 'eventhubs-read', 'p99_ms')} ms | {procs('eventhubs-load')} |")
    out.append(f"| the same at 10,000 msg/s | p99 send-to-read <= 20 ms | "
               f"{get('eventhubs-10k', 'eventhubs-read', 'rate')}/s read, p50 {get('eventhubs-10k', 'eventhubs-read', 'p50_ms')} ms, p99 {get('eventhubs-10k', 'eventhubs-read', 'p99_ms')} ms; "
               f"PUBACK p99 {get('eventhubs-10k', 'eventhubs-ingest', 'p99_ms')} ms | {procs('eventhubs-10k')} |")
    out.append(f"| start-up with {get('startup', 'startup', 'devices')} persisted devices | <= 300 ms | best of 3: {get('startup', 'startup', 'best_ms')} ms to the banner | - | - |")
    out.append(f"| restart with the telemetry of a 10 s load kept ({get('reload', 'reload', 'events')} events) | memory as once written | "
               f"{get('reload', 'reload', 'start_ms')} ms to the banner; {get('reload', 'reload', 'reloaded_kib')} KiB resident "
               f"(peak {get('reload', 'reload', 'peak_kib')} KiB) against {get('reload', 'reload', 'written_kib')} KiB once written | - | - |")
    out.append("")
    out.append("## The anchor: Mosquitto on the same machine and run\n")
    out.append("The nearest equivalent of a direct method through a plain broker: callers publish a request to a responder's "
               "topic and wait for its echo on their own (two hops through the broker, QoS 0, TLS both ways, Mosquitto "
               f"{subprocess.run(['mosquitto', '-h'], capture_output=True, text=True).stdout.split(chr(10))[0].replace('mosquitto version ', '') or '?'}).\n")
    out.append("| load | Mosquitto echo | emulator direct method | ratio (emulator / Mosquitto) |")
    out.append("| --- | --- | --- | --- |")
    for label, ours, theirs, key in [
        ("one caller, p50", "methods-idle", "mosquitto-idle", "p50_ms"),
        ("10,000/s, p50", "methods-10k", "mosquitto-10k", "p50_ms"),
        ("10,000/s, p99", "methods-10k", "mosquitto-10k", "p99_ms"),
        ("64 callers back to back, p99", "methods-load", "mosquitto-load", "p99_ms"),
    ]:
        o, t = get(ours, "methods", key), get(theirs, "echo", key)
        out.append(f"| {label} | {t} ms | {o} ms | {ratio(o, t)} |")
    o, t = get("methods-load", "methods", "rate"), get("mosquitto-load", "echo", "rate")
    out.append(f"| 64 callers back to back, round trips/s | {t}/s | {o}/s | {ratio(t, o)} fewer |")
    out.append("")
    if query:
        out.append("## Queries (in-process: the query engine over the registry)\n")
        out.append("Targets: 1M small twins (a location tag, a floor tag, a reported temperature) resident in <= 1 GiB "
                   "(<= 1,075 bytes a twin, identity included); a full scan and a GROUP BY over 1M in <= 150 ms each.\n")
        out.append("```")
        out.extend(line for line in query.splitlines() if re.search(r"twins", line))
        out.append("```\n")
    if configurations:
        out.append("## Configurations (in-process: automatic device management over the registry)\n")
        out.append("Each step is timed from the `PUT` or `DELETE` until every twin it concerns shows the outcome.\n")
        out.append("```")
        out.extend(line for line in configurations.splitlines() if line.strip())
        out.append("```\n")
    out.append("## How to reproduce each figure\n")
    out.append("`scripts/bench.sh` builds in release mode, writes a seed file of devices with keys, and for each row starts "
               "`target/release/iothub-emulator --data-dir <tmp> --https-port 18443 --mqtt-port 18883 --seed devices.json`, "
               "then runs (with `--mqtt 127.0.0.1:18883 --https 127.0.0.1:18443 --ca <data>/ca.pem --devices devices.json "
               "--service <connection string> --source-ip 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5`):\n")
    for row, command in [
        ("connected", "iothub-loadgen --count 19000 connect --hold 5 (emulator RSS read before and while held)"),
        ("AMQP devices", "iothub-loadgen --count 1000 --transport amqp connect --hold 5 | methods --callers 64 --seconds 10 | telemetry --seconds 10"),
        ("methods", "iothub-loadgen --count 1000 methods --callers 64 --seconds 10 [--rate 10000]; --callers 1 for idle"),
        ("jobs", "iothub-loadgen --count 10000 jobs --runs 3 --condition \"deviceId < 'sim-010000'\""),
        ("cloud-to-device", "iothub-loadgen --count 1000 c2d --senders 64 --seconds 10 [--rate 10000]"),
        ("twin patch", "iothub-loadgen --count 1000 twin-patch --callers 64 --seconds 10 [--rate 10000]"),
        ("reported", "iothub-loadgen --count 1000 reported --seconds 10"),
        ("telemetry", "iothub-loadgen --count 1000 telemetry --seconds 10 [--rate-per-device 30]"),
        ("anchor", "mosquitto with a TLS listener on 18884; iothub-loadgen --mqtt 127.0.0.1:18884 echo --responders 1000 --callers 64 --seconds 10 [--rate 10000]"),
        ("start-up", "seed 100,000 devices once, then time three fresh starts until the banner"),
        ("restart with telemetry", "iothub-loadgen --count 1000 telemetry --seconds 10, then SIGTERM and a start on the same data dir"),
        ("queries", "cargo bench -p iothub-emulator --bench query_scale"),
        ("configurations", "cargo bench -p iothub-emulator --bench configuration_apply"),
    ]:
        out.append(f"- {row}: `{command}`")
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
