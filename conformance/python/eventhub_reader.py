"""Reading a device's telemetry from the Event Hubs-compatible endpoint with the unmodified `azure-eventhub`:
shared by the Event Hubs and restart conformance scripts.

Environment: IOTHUB_EVENTHUB_CONNECTION_STRING (the Event Hub-compatible connection string) and IOTHUB_CA_FILE
(<ca.pem>, trusted for the emulator's TLS).
"""

import json
import os
import threading
import time

from azure.eventhub import EventHubConsumerClient

EVENTHUB_CONNECTION_STRING = os.environ["IOTHUB_EVENTHUB_CONNECTION_STRING"]
CA_FILE = os.environ.get("IOTHUB_CA_FILE")
WAIT = 20


def consumer(group="$Default", connection_string=EVENTHUB_CONNECTION_STRING, **kwargs):
    """An `EventHubConsumerClient` for `group`, trusting the emulator's CA unless the string asks for plain AMQP."""
    if CA_FILE and "UseDevelopmentEmulator" not in connection_string:
        kwargs.setdefault("connection_verify", CA_FILE)
    kwargs.setdefault("retry_total", 1)
    return EventHubConsumerClient.from_connection_string(connection_string, consumer_group=group, **kwargs)


class Reader:
    """Runs `client.receive` in a thread and keeps the events of `device_id` (or every error)."""

    def __init__(self, client, device_id, **receive_kwargs):
        self.client, self.device_id = client, device_id
        self.events, self.partitions, self.errors = [], [], []
        self.live = set()  # partitions whose receiver has called back at least once (an empty wait counts)
        self.thread = threading.Thread(target=self._receive, args=(receive_kwargs,), daemon=True)
        self.thread.start()

    def _receive(self, kwargs):
        def on_event(context, event):
            self.live.add(context.partition_id)
            if event is not None and event.system_properties.get(b"iothub-connection-device-id") == \
                    self.device_id.encode():
                self.events.append(event)
                self.partitions.append(context.partition_id)

        def on_error(context, error):
            self.errors.append(error)

        try:
            self.client.receive(on_event=on_event, on_error=on_error, max_wait_time=1, **kwargs)
        except Exception as error:  # a refused receiver ends receive() itself
            self.errors.append(error)

    def wait(self, count, seconds=WAIT):
        deadline = time.monotonic() + seconds
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return [json.loads(e.body_as_str()) for e in self.events]

    def wait_live(self, partitions, seconds=WAIT):
        """Waits until the receivers of `partitions` are attached: `@latest` means "from when the link opened"."""
        deadline = time.monotonic() + seconds
        while len(self.live) < partitions and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.live) >= partitions

    def wait_error(self, seconds=WAIT):
        deadline = time.monotonic() + seconds
        while not self.errors and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.errors

    def close(self):
        self.client.close()
        self.thread.join(10)


