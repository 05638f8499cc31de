"""Reading telemetry from the built-in Event Hubs-compatible endpoint with Microsoft's unmodified `azure-eventhub`
(its own pure-Python AMQP stack), sent by devices on the unmodified `azure-iot-device` (versions pinned in
requirements.lock).

Environment: IOTHUB_CONNECTION_STRING (hub owner; devices are created with it), IOTHUB_EVENTHUB_CONNECTION_STRING
(the Event Hub-compatible connection string: the emulator's banner prints it, the portal shows it under Built-in
endpoints), IOTHUB_CA_FILE=<ca.pem> for the emulator (devices and Event Hubs clients trust it), optionally
IOTHUB_CONSUMER_GROUP_2 (a second consumer group the hub declares) and IOTHUB_EVENTHUB_PLAIN_PORT (the emulator's
plain AMQP port for `UseDevelopmentEmulator=true`). Prints "PASS <name>" / "FAIL <name>: <why>" lines (and "SKIP"
for what the environment does not offer), then "N passed, M failed"; exits 0 only when nothing failed.
"""

import datetime
import json
import os
import secrets
import time

from azure.eventhub import TransportType
from azure.iot.device import IoTHubDeviceClient, Message
from azure.iot.hub import IoTHubRegistryManager

from eventhub_reader import EVENTHUB_CONNECTION_STRING, Reader, consumer
from harness import check, device_maker, hub_settings, run, scenario

CONNECTION_STRING, HOST, CA_PEM = hub_settings()
SECOND_GROUP = os.environ.get("IOTHUB_CONSUMER_GROUP_2")
PLAIN_PORT = os.environ.get("IOTHUB_EVENTHUB_PLAIN_PORT")

registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
suffix = secrets.token_hex(5)
created = []
clients = []


make_device = device_maker(registry, HOST, "conf-py-eh", suffix, created)


def create_device(label):
    """A registered device, connected over MQTT: its id, generation id and client."""
    device_id, connection_string = make_device(label)
    client = IoTHubDeviceClient.create_from_connection_string(
        connection_string, **({"server_verification_cert": CA_PEM} if CA_PEM else {}))
    clients.append(client)
    client.connect()
    return device_id, registry.get_device(device_id).generation_id, client


# Messages the sender device has sent so far (every one acknowledged).
sent = []


def send(client, body, message_id=None, **properties):
    sent.append(body)
    message = Message(json.dumps(body))
    message.content_type = "application/json"
    message.content_encoding = "utf-8"
    if message_id:
        message.message_id = message_id
    for key, value in properties.items():
        message.custom_properties[key] = value
    client.send_message(message)


def main():
    device_id, generation_id, device = create_device("sender")

    @scenario("py-eh-properties")
    def _():
        client = consumer()
        try:
            properties = client.get_eventhub_properties()
            check(properties["eventhub_name"] == EVENTHUB_CONNECTION_STRING.split("EntityPath=")[1].split(";")[0],
                  f"name {properties}")
            check(properties["partition_ids"] == ["0", "1", "2", "3"], f"partition ids {properties['partition_ids']}")
            partition = client.get_partition_properties("0")
            check(partition["id"] == "0" and isinstance(partition["last_enqueued_sequence_number"], int)
                  and isinstance(partition["last_enqueued_offset"], str), f"partition {partition}")
        finally:
            client.close()

    @scenario("py-eh-receive-telemetry")
    def _():
        reader = Reader(consumer(), device_id, starting_position="-1")
        try:
            send(device, {"temperature": 21.5}, message_id="py-m1", temperatureAlert="true")
            check(reader.wait(1) == [{"temperature": 21.5}], f"received {reader.wait(1, 0)}")
            event = reader.events[0]
            system = event.system_properties
            check(event.properties == {b"temperatureAlert": b"true"}, f"application properties {event.properties}")
            check(system.get(b"content-type") == b"application/json", f"content type {system}")
            check(system.get(b"content-encoding") == b"utf-8", f"content encoding {system}")
            check(system.get(b"message-id") == b"py-m1", f"message id {system}")
            check(system.get(b"iothub-connection-auth-generation-id") == generation_id.encode(), f"generation {system}")
            check(system.get(b"iothub-message-source") == b"Telemetry", f"source {system}")
            check(b"iothub-enqueuedtime" in system and b"iothub-connection-auth-method" in system, f"{system}")
            check(isinstance(event.sequence_number, int) and isinstance(event.offset, str), "positions")
            age = datetime.datetime.now(datetime.timezone.utc) - event.enqueued_time
            check(abs(age.total_seconds()) < 60, f"enqueued {event.enqueued_time}")
        finally:
            reader.close()

    @scenario("py-eh-start-positions")
    def _():
        send(device, {"n": 0})  # before the reader: "@latest" must not return it
        first = Reader(consumer(), device_id, starting_position="@latest")
        try:
            check(first.wait_live(4), f"receivers attached on {sorted(first.live)}")
            for n in (1, 2, 3):
                send(device, {"n": n})
            check(first.wait(3) == [{"n": 1}, {"n": 2}, {"n": 3}], f"from latest {first.wait(3, 0)}")
            events = first.events
        finally:
            first.close()
        positions = {
            "after the first's sequence number": (events[0].sequence_number, False, [{"n": 2}, {"n": 3}]),
            "from the second's offset": (events[1].offset, True, [{"n": 2}, {"n": 3}]),
            "from the third's enqueued time": (events[2].enqueued_time, True, [{"n": 3}]),
        }
        for what, (position, inclusive, expected) in positions.items():
            reader = Reader(consumer(), device_id, starting_position=position, starting_position_inclusive=inclusive)
            try:
                got = reader.wait(len(expected))
                time.sleep(0.5)
                got = reader.wait(len(expected), 0)
                check(got == expected, f"{what}: {got}")
            finally:
                reader.close()

    @scenario("py-eh-consumer-groups")
    def _():
        if not SECOND_GROUP:
            raise AssertionError("IOTHUB_CONSUMER_GROUP_2 is not set")
        default, second = Reader(consumer(), device_id, starting_position="-1"), \
            Reader(consumer(SECOND_GROUP), device_id, starting_position="-1")
        try:
            count = len(sent)
            check(default.wait(count) == sent and second.wait(count) == sent,
                  f"both groups read all {count} messages: {default.wait(count, 0)} / {second.wait(count, 0)}")
            check([e.sequence_number for e in default.events[:count]] == [e.sequence_number for e in second.events[:count]],
                  "independently, from the same positions")
        finally:
            default.close()
            second.close()
        # The hub refuses the link with amqp:not-found; this SDK retries quietly, so what the user sees is that
        # an undeclared group reads nothing (and any error it reports is the not-found).
        unknown = Reader(consumer("nosuchgroup"), device_id, starting_position="-1")
        try:
            time.sleep(5)
            check(not unknown.events, f"an undeclared consumer group reads nothing: {len(unknown.events)} events")
            check(all("not-found" in str(e) or "could not be found" in str(e) for e in unknown.errors),
                  f"errors {unknown.errors}")
        finally:
            unknown.close()

    @scenario("py-eh-epoch-takeover")
    def _():
        probe = Reader(consumer(), device_id, starting_position="-1")
        try:
            check(probe.wait(1), "the device's messages are there")
            owner = probe.partitions[0]
        finally:
            probe.close()
        low = Reader(consumer(), device_id, partition_id=owner, starting_position="@latest", owner_level=1)
        try:
            time.sleep(1)
            high = Reader(consumer(), device_id, partition_id=owner, starting_position="@latest", owner_level=2)
            try:
                errors = low.wait_error()
                check(errors and any("stolen" in str(e).lower() or "disconnect" in str(e).lower()
                                     or "epoch" in str(e).lower() for e in errors),
                      f"the lower epoch receiver is taken over: {errors}")
                send(device, {"after": "takeover"})
                check(high.wait(1) == [{"after": "takeover"}], f"the higher epoch reads on: {high.wait(1, 0)}")
            finally:
                high.close()
        finally:
            low.close()

    @scenario("py-eh-websockets")
    def _():
        reader = Reader(consumer(transport_type=TransportType.AmqpOverWebsocket), device_id, starting_position="-1")
        try:
            check(len(reader.wait(1)) >= 1, "telemetry over AMQP on WebSockets")
        finally:
            reader.close()

    if PLAIN_PORT:
        @scenario("py-eh-development-emulator")
        def _():
            parts = dict(p.split("=", 1) for p in EVENTHUB_CONNECTION_STRING.split(";") if p)
            plain = (f"Endpoint=sb://localhost:{PLAIN_PORT};SharedAccessKeyName={parts['SharedAccessKeyName']};"
                     f"SharedAccessKey={parts['SharedAccessKey']};EntityPath={parts['EntityPath']};"
                     "UseDevelopmentEmulator=true")
            reader = Reader(consumer(connection_string=plain), device_id, starting_position="-1")
            try:
                check(len(reader.wait(1)) >= 1, "telemetry over plain AMQP")
            finally:
                reader.close()
    else:
        print("SKIP py-eh-development-emulator: IOTHUB_EVENTHUB_PLAIN_PORT is not set", flush=True)


if __name__ == "__main__":
    run(main, registry, clients, created, seconds=240)
