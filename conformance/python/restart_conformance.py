"""Restart conformance with Microsoft's unmodified Python SDKs (versions pinned in requirements.lock).

An `azure-iot-device` client connected while the hub stops (SIGTERM) and starts again on the same data dir
reconnects on its own (the SDK's connection retry): what was acknowledged before is there, methods and desired
changes reach the device, its reported patches land. An `azure-eventhub` consumer that checkpointed before the
restart resumes after it from the checkpoint and reads exactly what was sent since.

Environment: IOTHUB_CONNECTION_STRING (hub owner), IOTHUB_EVENTHUB_CONNECTION_STRING (the Event Hub-compatible
connection string), REQUESTS_CA_BUNDLE=<ca.pem> and IOTHUB_CA_FILE=<ca.pem>, and
someone to restart the hub: the script prints "READY" once its writes are acknowledged and waits for a line on
stdin, which must come after the hub is back (scripts/sdk-conformance.sh does this). Prints "PASS <name>" /
"FAIL <name>: <why>", then "N passed, M failed"; exits 0 only when nothing failed.
"""

import json
import os
import secrets
import sys
import threading
import time

from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

from eventhub_reader import Reader, consumer
from harness import check, hub_settings, scenario, summary

CONNECTION_STRING, HOST, CA_PEM = hub_settings()

registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
device_id = f"conf-py-restart-{secrets.token_hex(5)}"


def ping_until_answered(seconds):
    """Invokes `ping` until the device answers (it may still be reconnecting), for at most `seconds`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            request = CloudToDeviceMethod(method_name="ping", payload={"n": 2}, response_timeout_in_seconds=5,
                                          connect_timeout_in_seconds=5)
            return registry.invoke_device_method(device_id, request)
        except Exception as error:  # offline or still reconnecting: try again
            last = error
            time.sleep(0.25)
    raise AssertionError(f"the device did not answer within {seconds} s: {last}")


def send_telemetry(client, body):
    message = Message(json.dumps(body))
    message.content_type = "application/json"
    message.content_encoding = "utf-8"
    client.send_message(message)


def read_telemetry(count, **receive_kwargs):
    """The device's telemetry events read from the given position on until `count` arrived, plus a moment more
    (anything beyond `count` would be an event read twice)."""
    reader = Reader(consumer(), device_id, **receive_kwargs)
    try:
        reader.wait(count)
        time.sleep(1.5)
        return reader.events, reader.partitions
    finally:
        reader.close()


def main():
    device = registry.create_device_with_sas(device_id, "", "", "enabled")
    key = device.authentication.symmetric_key.primary_key
    kwargs = {"server_verification_cert": CA_PEM} if CA_PEM else {}
    client = IoTHubDeviceClient.create_from_connection_string(
        f"HostName={HOST};DeviceId={device_id};SharedAccessKey={key}", **kwargs)
    desired = []
    arrived = threading.Event()
    # The consumer's checkpoint: the partition of the device's telemetry and the last sequence number read.
    checkpoint = {}

    def on_method(request):
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, {"pong": request.payload["n"]}))

    def on_patch(patch):
        desired.append(patch)
        if patch.get("after") == 2:
            arrived.set()

    try:
        client.connect()
        client.on_method_request_received = on_method
        client.on_twin_desired_properties_patch_received = on_patch

        @scenario("before-restart-writes-acknowledged")
        def _():
            registry.update_twin(device_id, Twin(tags={"site": "lab"}, properties=TwinProperties(desired={"before": 1})),
                                 "*")
            client.patch_twin_reported_properties({"beforeRestart": True})
            check(ping_until_answered(10).status == 200, "ping before the restart")

        @scenario("before-restart-telemetry-read-and-checkpointed")
        def _():
            for n in (1, 2, 3):
                send_telemetry(client, {"n": n})
            events, partitions = read_telemetry(3, starting_position="-1")
            bodies = [json.loads(e.body_as_str()) for e in events]
            check(bodies == [{"n": 1}, {"n": 2}, {"n": 3}], f"read {bodies}")
            checkpoint.update(partition=partitions[-1], sequence_number=events[-1].sequence_number)

        print("READY", flush=True)
        sys.stdin.readline()

        @scenario("acknowledged-writes-survive-the-restart")
        def _():
            twin = registry.get_twin(device_id)
            check(twin.tags == {"site": "lab"}, f"tags {twin.tags}")
            check(twin.properties.desired.get("before") == 1, f"desired {twin.properties.desired}")
            check(twin.properties.reported.get("beforeRestart") is True, f"reported {twin.properties.reported}")

        @scenario("device-reconnects-by-itself-and-answers-methods")
        def _():
            # The SDK retries its connection every 10 s by default.
            result = ping_until_answered(40)
            check(result.status == 200 and result.payload == {"pong": 2}, f"ping {result.status} {result.payload}")

        @scenario("desired-change-after-the-restart-reaches-the-device")
        def _():
            registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"after": 2})), "*")
            check(arrived.wait(10), f"desired patches seen: {desired}")

        @scenario("event-hubs-consumer-resumes-from-its-checkpoint")
        def _():
            check(checkpoint, "no checkpoint was taken before the restart")
            for n in (4, 5):
                send_telemetry(client, {"n": n})
            events, _ = read_telemetry(2, partition_id=checkpoint["partition"],
                                       starting_position=checkpoint["sequence_number"],
                                       starting_position_inclusive=False)
            bodies = [json.loads(e.body_as_str()) for e in events]
            check(bodies == [{"n": 4}, {"n": 5}], f"after the checkpoint: {bodies}")
            check(events[0].sequence_number > checkpoint["sequence_number"], "sequence numbers went on")

        @scenario("reported-patch-after-the-restart-lands")
        def _():
            client.patch_twin_reported_properties({"afterRestart": True})
            reported = registry.get_twin(device_id).properties.reported
            check(reported.get("afterRestart") is True, f"reported {reported}")
    finally:
        try:
            client.shutdown()
        except Exception:
            pass
        try:
            registry.delete_device(device_id)
        except Exception:
            pass


if __name__ == "__main__":
    code = 0
    try:
        main()
    except Exception as error:  # an error outside the scenarios is a failure too
        print(f"FAIL unexpected: {type(error).__name__}: {error}", flush=True)
        code = 1
    failed = summary(code)
    os._exit(0 if failed == 0 else 1)
