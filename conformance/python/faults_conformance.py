"""Fault conformance with Microsoft's unmodified Python SDKs (versions pinned in requirements.lock).

The emulator's test-suite faults (POST /emulator/faults) break the hub the way a real one breaks, and an
`azure-iot-device` app (IoTHubDeviceClient over MQTT) with an `azure-iot-hub` back end rides it out with nothing
but the SDKs' own retry:
  a. a device dropped and refused for ~10 s (`disconnect`) reconnects by itself, answers methods again, and is
     handed the desired change made while it was away;
  b. a 30 s hub-wide `outage`: the service REST API answers 503, health says "outage", a cloud-to-device send
     fails (its AMQP sender is detached), an Event Hubs reader is detached and reads on after it, and afterwards
     the device reconnects by itself, answers methods and gets desired patches;
  c. a device-method job over 2 devices, one of which never gets its call (`methodsUndelivered`), completes with
     that device's record failed (GatewayTimeout) and the other's completed (200).

What the Python device SDK does on reconnect (azure/iot/device/common/pipeline/pipeline_stages_base.py,
ConnectionStateStage): with connection_retry (the default) a dropped connection is retried at once and then every
connection_retry_interval (10 s by default) as long as the failure is transient: a CONNACK 3 refusal is
ConnectionFailedError (common/mqtt_transport.py), which is. Once connected again, EnsureDesiredPropertiesStage
(azure/iot/device/iothub/pipeline/pipeline_stages_iothub.py, ensure_desired_properties=True by default) reads the
twin itself and, when the desired $version differs from the last one the app saw, hands the app's
on_twin_desired_properties_patch_received handler an artificial "patch": the whole desired section. So unlike the
Node SDK the app needs no code of its own to learn what changed while it was away.

The service side, msrest over urllib3 (msrest/universal_http/requests.py, ClientRetryPolicy): 503 is retried
3 times honouring Retry-After, but only for urllib3's default retryable methods (GET, PUT, DELETE, ...; not PATCH
or POST), so a PATCH during an outage fails at once with the 503 while a GET waits the outage out.

Environment: IOTHUB_CONNECTION_STRING (hub owner: the emulator controls need the iothubowner policy),
IOTHUB_EVENTHUB_CONNECTION_STRING, REQUESTS_CA_BUNDLE=<ca.pem>, SSL_CERT_FILE=<ca.pem> (uamqp trusts only it) and
IOTHUB_CA_FILE=<ca.pem>. The outage is hub-wide: nothing else may use the hub
meanwhile. Prints "PASS <name>" / "FAIL <name>: <why>", then "N passed, M failed"; exits 0 only when nothing
failed. Removes every fault (DELETE /emulator/faults) and deletes its devices at the end, whatever happened.
"""

import datetime
import json
import secrets
import threading
import time
import uuid

import requests
from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse
from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.auth import ConnectionStringAuthentication
from azure.iot.hub.models import CloudToDeviceMethod, JobRequest, QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from eventhub_reader import Reader, consumer
from harness import check, device_maker, hub_settings, results, run, scenario

CONNECTION_STRING, HOST, CA_PEM = hub_settings()

registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
jobs = IoTHubJobManager.from_connection_string(CONNECTION_STRING)
suffix = secrets.token_hex(4)
created = []
clients = []
create_device = device_maker(registry, HOST, "py-faults", suffix, created)


def emulator(method, path, body=None):
    """An emulator-only control under /emulator/, authorized as the service SDK authorizes itself (a SAS token of
    the owner policy for the hub host name); the parsed JSON answer, or None for 204."""
    session = ConnectionStringAuthentication(CONNECTION_STRING).signed_session()
    response = session.request(method, f"https://{HOST}{path}", json=body, timeout=30)
    if response.status_code >= 300:
        raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def health():
    return requests.get(f"https://{HOST}/emulator/health", timeout=10).json()


def add_fault(**fault):
    added = emulator("POST", "/emulator/faults", fault)
    check(added.get("id") and added["kind"] == fault["kind"], f"fault {added}")
    return added


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def until(condition, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} (waited {seconds:.1f} s)")


class App:
    """The device app: answers lockDoor with 200, keeps the desired properties it is handed, and records its
    connection changes. It has no reconnect code of its own."""

    def __init__(self, label):
        self.device_id, device_cs = create_device(label)
        kwargs = {"server_verification_cert": CA_PEM} if CA_PEM else {}
        self.client = IoTHubDeviceClient.create_from_connection_string(device_cs, **kwargs)
        clients.append(self.client)
        self.lock = threading.Lock()
        self.lock_door_calls = 0
        self.patches = []
        self.desired = {}
        self.connection_changes = []  # (time, connected)
        self.client.on_connection_state_change = self.on_connection_state_change
        self.client.connect()
        self.client.on_method_request_received = self.on_method
        self.client.on_twin_desired_properties_patch_received = self.on_patch
        self.desired.update(self.client.get_twin()["desired"])

    def on_connection_state_change(self):
        with self.lock:
            self.connection_changes.append((time.time(), self.client.connected))

    def on_method(self, request):
        if request.name == "lockDoor":
            with self.lock:
                self.lock_door_calls += 1
            response = MethodResponse.create_from_method_request(request, 200, {"locked": True, "by": self.device_id})
        else:
            response = MethodResponse.create_from_method_request(request, 404, {"unknown": request.name})
        self.client.send_method_response(response)

    def on_patch(self, patch):
        with self.lock:
            self.patches.append(patch)
            self.desired.update(patch)

    def dropped_at(self, after):
        """When the client saw its connection drop after `after` (epoch seconds), if it did."""
        with self.lock:
            return next((t for t, connected in self.connection_changes if not connected and t > after), None)

    def reconnected_at(self, after):
        """When the client got connected again after a drop after `after`, if it did."""
        dropped = self.dropped_at(after)
        with self.lock:
            return next((t for t, connected in self.connection_changes if connected and dropped and t > dropped), None)


def lock_door(device_id, response_timeout=5, connect_timeout=2):
    request = CloudToDeviceMethod(method_name="lockDoor", payload={"reason": "conformance"},
                                  response_timeout_in_seconds=response_timeout,
                                  connect_timeout_in_seconds=connect_timeout)
    return registry.invoke_device_method(device_id, request)


def lock_door_until_answered(device_id, seconds):
    """Invokes lockDoor until the device answers (it may still be re-subscribing), for at most `seconds`."""
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            return lock_door(device_id)
        except Exception as error:  # offline or still reconnecting: try again
            last = error
            time.sleep(0.25)
    raise AssertionError(f"{device_id} did not answer lockDoor within {seconds} s: {last}")


def connection_state(device_id):
    return registry.get_device(device_id).connection_state


def main():
    try:
        scenarios()
    finally:
        # Whatever happened: no fault of this script outlives it.
        try:
            emulator("DELETE", "/emulator/faults")
        except Exception as error:
            print(f"FAIL cleanup: could not remove the faults: {error}", flush=True)
            results.append(False)


def scenarios():
    @scenario("forced-disconnect-device-reconnects-by-itself-and-is-handed-the-missed-change")
    def _():
        app = App("away")
        injected = time.time()
        fault = add_fault(kind="disconnect", deviceId=app.device_id, durationSeconds=10)
        fault_ends = parse_time(fault["endTime"])
        until(lambda: app.dropped_at(injected), 5, "the SDK did not see the connection drop")
        check(connection_state(app.device_id) == "Disconnected", "the hub still has the device connected")
        listed = emulator("GET", "/emulator/faults")
        check(any(f["id"] == fault["id"] and f["deviceId"] == app.device_id for f in listed), f"faults {listed}")

        # While it is refused (the SDK retries every 10 s, getting CONNACK 3): the service changes its desired
        # properties, and a method call finds it offline.
        time.sleep(1)
        registry.update_twin(app.device_id, Twin(properties=TwinProperties(desired={"whileAway": "closed"})), "*")
        try:
            lock_door(app.device_id, connect_timeout=1)
            raise AssertionError("a method call reached a device the hub refuses")
        except HttpOperationError as error:
            check(error.response.status_code == 404 and "404103" in error.response.text,
                  f"offline call {error.response.status_code} {error.response.text}")
        check(time.time() < fault_ends - 1, "the fault is still in force")
        check(app.reconnected_at(injected) is None and not app.client.connected, "the device got back in while refused")

        # The fault ends by itself; the SDK's own retry brings the device back (within its 10 s retry interval).
        until(lambda: app.reconnected_at(injected), fault_ends - time.time() + 25,
              "the SDK did not reconnect within 25 s of the fault's end")
        reconnected_after = app.reconnected_at(injected) - fault_ends
        print(f"INFO disconnect: the SDK reconnected {reconnected_after:.2f} s after the fault ended", flush=True)
        check(reconnected_after > -0.2, f"reconnected {-reconnected_after:.1f} s before the fault ended")
        result = lock_door_until_answered(app.device_id, 10)
        check(result.status == 200 and result.payload["by"] == app.device_id, f"lockDoor {result.status} {result.payload}")
        # The SDK reads the twin after reconnecting and hands the handler the whole desired section.
        until(lambda: app.desired.get("whileAway") == "closed", 10,
              f"the change made while away did not reach the app: patches {app.patches}")
        handed = next(p for p in app.patches if p.get("whileAway") == "closed")
        check(isinstance(handed.get("$version"), int), f"patch {handed}")

        calls = emulator("GET", f"/emulator/devices/{app.device_id}/methodCalls")
        check(calls[0].get("status") == 200 and any(c.get("errorCode") == "DeviceNotOnline" for c in calls[1:]),
              f"method calls {calls}")
        check(not any(f["id"] == fault["id"] for f in emulator("GET", "/emulator/faults")), "the ended fault is listed")

    @scenario("30s-outage-503-then-device-reconnects-by-itself")
    def _():
        app = App("outage")
        check(health()["status"] == "healthy", "health before")
        # The back end's AMQP sender (uamqp) is open before the outage.
        sender = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
        sender.send_c2d_message(app.device_id, "before the outage", {})
        # And a telemetry reader on the Event Hubs-compatible endpoint, with the SDK's default retry. It starts from
        # a time, not "@latest": a receiver that attaches again after the outage then starts there too, and
        # misses nothing sent before it got back.
        reader = Reader(consumer(retry_total=3), app.device_id,
                        starting_position=datetime.datetime.now(datetime.timezone.utc))
        check(reader.wait_live(4), "the Event Hubs reader did not attach to the 4 partitions")
        injected = time.time()
        fault = add_fault(kind="outage", durationSeconds=30)
        try:
            outage_ends = parse_time(fault["endTime"])
            during = health()
            check(during["status"] == "outage" and during["activeFaults"] >= 1, f"health during {during}")
            # A PATCH is not retried by msrest: the 503 comes back at once.
            started = time.time()
            try:
                registry.update_twin(app.device_id, Twin(properties=TwinProperties(desired={"during": 1})), "*")
                raise AssertionError("update_twin succeeded during the outage")
            except HttpOperationError as error:
                check(error.response.status_code == 503, f"update_twin status {error.response.status_code}")
                retry_after = int(error.response.headers.get("Retry-After", "0"))
                check(1 <= retry_after <= 30, f"Retry-After {error.response.headers.get('Retry-After')}")
                check("ServiceUnavailable" in error.response.text, f"body {error.response.text}")
            check(time.time() - started < 5, "the 503 was not surfaced at once")
            # The AMQP service side is away too: the sender is detached (detach-forced), and uamqp reports it.
            try:
                sender.send_c2d_message(app.device_id, "during the outage", {})
                raise AssertionError("send_c2d_message succeeded during the outage")
            except Exception as error:  # uamqp's LinkDetach; the SDK declares no type of its own
                check("outage" in str(error), f"send_c2d_message during the outage: {type(error).__name__} {error}")
            listed = emulator("GET", "/emulator/faults")
            check(any(f["id"] == fault["id"] and f["kind"] == "outage" for f in listed), f"faults {listed}")
            until(lambda: app.dropped_at(injected), 5, "the SDK did not see the connection drop")

            # A GET is retried after Retry-After: it waits the outage out and then answers.
            twin = registry.get_twin(app.device_id)
            print(f"INFO outage: get_twin answered {time.time() - outage_ends:.2f} s after the outage ended", flush=True)
            check(time.time() >= outage_ends - 0.5, f"get_twin answered {outage_ends - time.time():.1f} s early")
            check(twin.device_id == app.device_id and "during" not in twin.properties.desired, f"twin {twin}")
            check(health()["status"] == "healthy", "health after")
            # uamqp keeps a detached sender failed (as after any detach a real hub makes): a new manager sends.
            IoTHubRegistryManager.from_connection_string(CONNECTION_STRING).send_c2d_message(
                app.device_id, "after the outage", {})
            queued = registry.get_device(app.device_id).cloud_to_device_message_count
            check(queued == 2, f"queued {queued}, not 2 (before and after the outage)")

            until(lambda: app.reconnected_at(injected), outage_ends - time.time() + 60,
                  "the SDK did not reconnect within 60 s of the outage's end")
            reconnected_after = app.reconnected_at(injected) - outage_ends
            print(f"INFO outage: the SDK reconnected {reconnected_after:.2f} s after the outage ended", flush=True)
            check(reconnected_after > -0.2, f"reconnected {-reconnected_after:.1f} s before the outage ended")
            result = lock_door_until_answered(app.device_id, 10)
            check(result.status == 200 and result.payload["by"] == app.device_id,
                  f"lockDoor {result.status} {result.payload}")
            registry.update_twin(app.device_id, Twin(properties=TwinProperties(desired={"afterOutage": "open"})), "*")
            until(lambda: any(p.get("afterOutage") == "open" for p in app.patches), 10,
                  f"the desired change after the outage did not reach the device: {app.patches}")
            # The reader was detached and rode the outage out with the SDK's retry: it reads what comes after.
            app.client.send_message(Message(json.dumps({"after": "outage"})))
            read = reader.wait(1, 60)
            check(read == [{"after": "outage"}], f"read after the outage {read}; errors {reader.errors}")
            print(f"INFO outage: the Event Hubs reader saw {len(reader.errors)} errors and read on", flush=True)
        finally:
            # Ends it early if a check failed, so what follows is not refused.
            try:
                emulator("DELETE", f"/emulator/faults/{fault['id']}")
            except AssertionError:
                pass  # ended already
            reader.close()

    @scenario("job-with-an-undelivered-method-fails-that-device-GatewayTimeout")
    def _():
        ok, lost = App("door1"), App("door2")
        time.sleep(0.5)  # let the method SUBSCRIBEs land
        fault = add_fault(kind="methodsUndelivered", deviceId=lost.device_id, durationSeconds=60)
        try:
            request = JobRequest()
            request.job_id = str(uuid.uuid4())
            request.type = "scheduleDeviceMethod"
            request.start_time = datetime.datetime.utcnow().isoformat()
            request.max_execution_time_in_seconds = 60
            request.query_condition = f"deviceId IN ['{ok.device_id}', '{lost.device_id}']"
            request.cloud_to_device_method = CloudToDeviceMethod(method_name="lockDoor", payload={"pin": 7},
                                                                 response_timeout_in_seconds=5)
            started = time.time()
            check(jobs.create_scheduled_job(request.job_id, request).status == "queued", "created")
            job = None
            deadline = time.time() + 30
            while time.time() < deadline:
                job = jobs.get_scheduled_job(request.job_id)
                if job.status in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.2)
            stats = job.device_job_statistics
            check(job.status == "completed", f"job ended {job.status}")
            check(stats.device_count == 2 and stats.succeeded_count == 1 and stats.failed_count == 1, f"stats {stats}")
            check(time.time() - started >= 4.5, "the job finished before the 5 s response timeout")

            # query_iot_hub deserializes every item as a Twin, which drops a job record's status and error; the
            # same SDK call with raw=True gives the records as the hub sent them.
            spec = QuerySpecification(query=f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{request.job_id}'")
            raw = registry.protocol.query.get_twins(spec, None, None, None, True)
            records = {r["deviceId"]: r for r in raw.response.json()}
            check(len(records) == 2, f"records {records}")
            good, bad = records.get(ok.device_id), records.get(lost.device_id)
            check(good and good["status"] == "completed" and good["outcome"]["deviceMethodResponse"]["status"] == 200,
                  f"{ok.device_id} record {good}")
            check(bad and bad["status"] == "failed" and bad["error"]["code"] == "GatewayTimeout",
                  f"{lost.device_id} record {bad}")
            check(ok.lock_door_calls == 1 and lost.lock_door_calls == 0,
                  f"lockDoor ran {ok.lock_door_calls}, {lost.lock_door_calls} times")
            calls = emulator("GET", f"/emulator/devices/{lost.device_id}/methodCalls")
            check(len(calls) == 1 and calls[0]["errorCode"] == "GatewayTimeout" and "status" not in calls[0]
                  and calls[0]["durationMs"] >= 4500, f"method calls {calls}")
        finally:
            emulator("DELETE", f"/emulator/faults/{fault['id']}")
        result = lock_door_until_answered(lost.device_id, 10)
        check(result.status == 200, f"lockDoor after the fault {result.status}")


if __name__ == "__main__":
    run(main, registry, clients, created, seconds=240)
