"""Cloud-to-device conformance with Microsoft's unmodified Python SDKs (versions pinned in requirements.lock).

`azure-iot-hub`: `IoTHubRegistryManager.send_c2d_message` over AMQP (uamqp, SASL MSSBCBS + CBS, port 5671) and over
AMQP on WebSockets (443), feedback over HTTPS through the SDK's protocol client (`receive_feedback_notification`,
`complete_feedback_notification`, as its runtime manager calls them), and the queue purge. `azure-iot-device`:
`IoTHubDeviceClient.on_message_received` over MQTT.

Environment: IOTHUB_CONNECTION_STRING (hub owner); for the emulator also REQUESTS_CA_BUNDLE=<ca.pem> (HTTPS),
SSL_CERT_FILE=<ca.pem> (uamqp reads only that) and IOTHUB_CA_FILE=<ca.pem> (the device client). Prints
"PASS <name>" / "FAIL <name>: <why>" lines, then "N passed, M failed"; exits 0 only when nothing failed.
"""

import json
import secrets
import threading
import time

import uamqp
from azure.iot.device import IoTHubDeviceClient
from azure.iot.hub import IoTHubRegistryManager

from harness import check, device_maker, hub_settings, run, scenario

CONNECTION_STRING, HOST, CA_PEM = hub_settings()

registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
feedback_api = registry.protocol.cloud_to_device_messages
suffix = secrets.token_hex(5)
created = []
clients = []
# Feedback records read so far, by original message id.
feedback = {}


create_device = device_maker(registry, HOST, "conf-py-c2d", suffix, created)


def connect(device_connection_string):
    kwargs = {"server_verification_cert": CA_PEM} if CA_PEM else {}
    client = IoTHubDeviceClient.create_from_connection_string(device_connection_string, **kwargs)
    clients.append(client)
    client.connect()
    return client


def feedback_for(message_id, seconds=15):
    """Reads feedback messages over HTTPS (completing each) until one reports `message_id`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and message_id not in feedback:
        raw = feedback_api.receive_feedback_notification(raw=True)
        if raw.response.status_code == 200:
            for record in json.loads(raw.response.text):
                feedback[record["originalMessageId"]] = record
            lock = raw.response.headers["ETag"].strip('"')
            feedback_api.complete_feedback_notification(lock)
        else:
            check(raw.response.status_code == 204, f"feedback status {raw.response.status_code}")
            time.sleep(0.3)
    check(message_id in feedback, f"no feedback for {message_id}")
    return feedback[message_id]


def main():
    device_id, device_cs = create_device("mqtt")
    offline_id, _ = create_device("offline")
    state = {}

    @scenario("mqtt-device-gets-properties-and-success-feedback")
    def _():
        client = connect(device_cs)
        state["client"] = client
        arrived = threading.Event()

        def on_message(message):
            state["message"] = message
            arrived.set()
        client.on_message_received = on_message
        time.sleep(1)  # the SDK subscribes when the handler is set
        message_id = f"py-{suffix}"
        properties = {"messageId": message_id, "correlationId": "corr-1", "contentType": "application/json",
                      "contentEncoding": "utf-8", "iothub-ack": "full", "zulu": "1", "alpha": "a&b/c"}
        registry.send_c2d_message(device_id, '{"lock": true}', properties=properties)
        check(arrived.wait(15), "the device received nothing")
        got = state["message"]
        check(got.message_id == message_id and got.correlation_id == "corr-1", f"ids {got.message_id} {got.correlation_id}")
        check(got.data == b'{"lock": true}', f"body {got.data}")
        check(got.content_type == "application/json" and got.content_encoding == "utf-8", "content type and encoding")
        check(got.custom_properties == {"zulu": "1", "alpha": "a&b/c"}, f"properties {got.custom_properties}")
        check(got.ack == "full", f"ack {got.ack}")
        record = feedback_for(message_id)
        check(record["statusCode"] == "Success" and record["deviceId"] == device_id, f"feedback {record}")

    @scenario("amqp-over-websockets-send")
    def _():
        arrived = threading.Event()
        state["client"].on_message_received = lambda message: arrived.set()
        ws = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING,
                                                          transport_type=uamqp.TransportType.AmqpOverWebsocket)
        ws.send_c2d_message(device_id, "over websockets")
        check(arrived.wait(15), "the device received nothing")

    @scenario("unknown-device-refused")
    def _():
        try:
            registry.send_c2d_message(f"conf-py-c2d-nobody-{suffix}", "x")
        except Exception as error:  # the SDK raises a bare Exception("C2D message send failure")
            check("failure" in str(error), f"error {error}")
            return
        raise AssertionError("a message to an unknown device was accepted")

    @scenario("51st-queued-message-refused-and-purge")
    def _():
        for i in range(50):
            registry.send_c2d_message(offline_id, f"m{i}")
        try:
            registry.send_c2d_message(offline_id, "one too many")
            raise AssertionError("the 51st message was accepted")
        except AssertionError:
            raise
        except Exception:
            pass
        check(registry.get_device(offline_id).cloud_to_device_message_count == 50, "count of 50")
        purged = feedback_api.purge_cloud_to_device_message_queue(offline_id)
        check(purged.total_messages_purged == 50 and purged.device_id == offline_id, f"purged {purged}")
        check(registry.get_device(offline_id).cloud_to_device_message_count == 0, "empty after the purge")


if __name__ == "__main__":
    run(main, registry, clients, created)
