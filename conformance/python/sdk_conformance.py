"""Conformance with Microsoft's unmodified Python SDKs (versions pinned in requirements.lock).

`azure-iot-hub` (IoTHubRegistryManager, IoTHubJobManager) on the service side, `azure-iot-device` (IoTHubDeviceClient: MQTT over
TLS 1.2 on 8883 with QoS 1, and MQTT over WebSockets on 443) on the device side.

Environment: IOTHUB_CONNECTION_STRING (hub owner), optionally IOTHUB_JOBS_CONNECTION_STRING (a registryReadWrite
policy, as the jobs tutorial uses; the owner string otherwise); for the emulator also REQUESTS_CA_BUNDLE=<ca.pem> (service)
and IOTHUB_CA_FILE=<ca.pem> (passed to the device client as server_verification_cert). Prints "PASS <name>" /
"FAIL <name>: <why>" lines, then "N passed, M failed"; exits 0 only when nothing failed. The devices it creates
have random ids and are deleted at the end.
"""

import datetime
import json
import os
import time
import uuid
import secrets
import threading

from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse
from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, JobRequest, QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from harness import check, device_maker, hub_settings, run, scenario

CONNECTION_STRING, HOST, CA_PEM = hub_settings()

registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
jobs = IoTHubJobManager.from_connection_string(os.environ.get("IOTHUB_JOBS_CONNECTION_STRING") or CONNECTION_STRING)
suffix = secrets.token_hex(5)
created = []
clients = []


create_device = device_maker(registry, HOST, "conf-py", suffix, created)


def connect(device_connection_string, websockets=False):
    kwargs = {"websockets": websockets}
    if CA_PEM:
        kwargs["server_verification_cert"] = CA_PEM
    client = IoTHubDeviceClient.create_from_connection_string(device_connection_string, **kwargs)
    clients.append(client)
    client.connect()
    return client


# What echoOrder handlers received, as the device's json.dumps saw it.
echoed = []


def answer_methods(client, device_id):
    def handler(request):
        if request.name == "echoOrder":
            echoed.append(json.dumps(request.payload))
            client.send_method_response(MethodResponse.create_from_method_request(request, 200, request.payload))
            return
        payload = {"echo": request.payload, "from": device_id, "method": request.name}
        client.send_method_response(MethodResponse.create_from_method_request(request, 299, payload))
    client.on_method_request_received = handler


def invoke(device_id, name, payload, connect_timeout=5):
    request = CloudToDeviceMethod(method_name=name, payload=payload, response_timeout_in_seconds=10,
                                  connect_timeout_in_seconds=connect_timeout)
    return registry.invoke_device_method(device_id, request)


def job_request(kind, condition, start=None, **fields):
    """A JobRequest as the SDK's samples build it (start time an ISO string of utcnow())."""
    request = JobRequest()
    request.job_id = str(uuid.uuid4())
    request.type = kind
    request.start_time = (start or datetime.datetime.utcnow()).isoformat()
    request.max_execution_time_in_seconds = 60
    request.query_condition = condition
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def wait_for_job(job_id, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = jobs.get_scheduled_job(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job.status}")


def main():
    device_id, device_cs = create_device("mqtt")
    ws_id, ws_cs = create_device("ws")
    offline_id, _ = create_device("offline")
    state = {}

    @scenario("registry-get-update")
    def _():
        device = registry.get_device(device_id)
        check(device.device_id == device_id, f"deviceId {device.device_id}")
        check(len(device.authentication.symmetric_key.primary_key) == 44, "generated key")
        updated = registry.update_device_with_sas(device_id, "*", device.authentication.symmetric_key.primary_key,
                                                  device.authentication.symmetric_key.secondary_key, "enabled",
                                                  status_reason="conformance")
        check(updated.status_reason == "conformance", f"statusReason {updated.status_reason}")
        check(any(d.device_id == device_id for d in registry.get_devices()), "listed")

    @scenario("device-connect-tls12-qos1")
    def _():
        state["client"] = connect(device_cs)
        answer_methods(state["client"], device_id)

    @scenario("direct-method-round-trip")
    def _():
        result = invoke(device_id, "lockDoor", {"door": "back"})
        check(result.status == 299, f"status {result.status}")
        check(result.payload == {"echo": {"door": "back"}, "from": device_id, "method": "lockDoor"},
              f"payload {result.payload}")

    @scenario("method-payload-keeps-its-key-order")
    def _():
        # Keys deliberately not in alphabetical order, nested ones too: a hub that sorts them fails this.
        payload = {"nonce": secrets.token_hex(4), "n": 42, "list": [3, 1, {"z": 1, "a": 2}], "flag": True}
        sent = json.dumps(payload)
        result = invoke(device_id, "echoOrder", payload)
        check(echoed and echoed[-1] == sent, f"the device received {echoed[-1:]}, sent {sent}")
        check(json.dumps(result.payload) == sent, f"the service got back {json.dumps(result.payload)}, sent {sent}")

    @scenario("twin-keeps-the-order-keys-were-written-in")
    def _():
        written = {"zulu": 1, "bravo": {"y": 1, "x": 2}}
        registry.update_twin(ws_id, Twin(tags=written, properties=TwinProperties(desired=written)), "*")
        twin = registry.get_twin(ws_id)
        desired = twin.properties.desired
        check(list(desired)[-4:] == ["zulu", "bravo", "$metadata", "$version"], f"desired keys {list(desired)}")
        check(list(desired["bravo"]) == ["y", "x"], f"desired.bravo keys {list(desired['bravo'])}")
        metadata = desired["$metadata"]
        check(list(metadata)[:2] == ["$lastUpdated", "$lastUpdatedVersion"], f"$metadata keys {list(metadata)}")
        check(list(metadata)[-2:] == ["zulu", "bravo"], f"$metadata keys {list(metadata)}")
        check(list(twin.tags)[-2:] == ["zulu", "bravo"], f"tags keys {list(twin.tags)}")
        check(list(twin.tags["bravo"]) == ["y", "x"], f"tags.bravo keys {list(twin.tags['bravo'])}")

    @scenario("reported-properties-read-by-service")
    def _():
        client = state["client"]
        twin = client.get_twin()
        check(isinstance(twin["desired"]["$version"], int), f"twin {twin}")
        client.patch_twin_reported_properties({"pyBattery": 42, "pyInfo": {"os": "linux"}})
        reported = registry.get_twin(device_id).properties.reported
        check(reported["pyBattery"] == 42 and reported["pyInfo"] == {"os": "linux"}, f"reported {reported}")

    @scenario("desired-change-reaches-device")
    def _():
        client = state["client"]
        arrived = threading.Event()
        received = {}

        def on_patch(patch):
            received.update(patch)
            if patch.get("building") == "43":
                arrived.set()
        client.on_twin_desired_properties_patch_received = on_patch
        twin = registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"building": "43", "floor": 3})),
                                    "*")
        check(twin.properties.desired["building"] == "43", "service sees its write")
        check(arrived.wait(10), f"no desired patch reached the device (got {received})")
        check(received.get("floor") == 3 and isinstance(received.get("$version"), int), f"patch {received}")

    @scenario("telemetry-accepted")
    def _():
        message = Message(json.dumps({"temperature": 19.5}), content_encoding="utf-8",
                          content_type="application/json")
        message.custom_properties["source"] = "python"
        state["client"].send_message(message)

    @scenario("offline-device-gets-404103")
    def _():
        try:
            invoke(offline_id, "lockDoor", None, connect_timeout=0)
        except HttpOperationError as error:
            check(error.response.status_code == 404, f"status {error.response.status_code}")
            check("404103" in error.response.text, f"body {error.response.text}")
            return
        raise AssertionError("the call succeeded against a device that never connected")

    @scenario("mqtt-over-websockets-method")
    def _():
        client = connect(ws_cs, websockets=True)
        answer_methods(client, ws_id)
        result = invoke(ws_id, "ping", None)
        check(result.status == 299 and result.payload["from"] == ws_id, f"result {result.payload}")
        # azure-iot-hub replaces a None payload with "" before sending (iothub_registry_manager.invoke_device_method).
        check(result.payload["echo"] == "", f"the empty payload arrives as the SDK sent it: {result.payload}")

    @scenario("query-paged")
    def _():
        tag = f"conf{secrets.token_hex(4)}"
        for device in (device_id, ws_id, offline_id):
            registry.update_twin(device, Twin(tags={"conformance": tag}), "*")
        query = QuerySpecification(query=f"SELECT * FROM devices WHERE tags.conformance = '{tag}'")
        found, token, pages = [], None, 0
        while pages < 10:
            result = registry.query_iot_hub(query, token, 2)
            pages += 1
            found.extend(twin.device_id for twin in result.items)
            token = result.continuation_token
            if not token:
                break
        check(sorted(found) == sorted([device_id, ws_id, offline_id]), f"found {found}")
        check(pages == 2, f"pages {pages}")

    @scenario("job-device-method")
    def _():
        method = CloudToDeviceMethod(method_name="lockDoor", payload={"pin": 7}, response_timeout_in_seconds=15)
        request = job_request("scheduleDeviceMethod", f"deviceId IN ['{device_id}']", cloud_to_device_method=method)
        created_job = jobs.create_scheduled_job(request.job_id, request)
        check(created_job.status == "queued", f"created {created_job.status}")
        job = wait_for_job(request.job_id)
        stats = job.device_job_statistics
        check(job.status == "completed" and stats.succeeded_count == 1, f"job {job.status} {stats}")
        check(job.cloud_to_device_method.method_name == "lockDoor", "the request is echoed")

    @scenario("job-twin-update")
    def _():
        patch = Twin(etag="*", properties=TwinProperties(desired={"building": "44", "floor": 4}))
        request = job_request("scheduleUpdateTwin", f"deviceId IN ['{device_id}', '{ws_id}']", update_twin=patch)
        jobs.create_scheduled_job(request.job_id, request)
        job = wait_for_job(request.job_id)
        check(job.status == "completed" and job.device_job_statistics.device_count == 2, f"job {job.status}")
        desired = registry.get_twin(ws_id).properties.desired
        check(desired["building"] == "44" and desired["floor"] == 4, f"desired {desired}")

    @scenario("job-scheduled-then-cancelled")
    def _():
        method = CloudToDeviceMethod(method_name="lockDoor", response_timeout_in_seconds=15)
        start = datetime.datetime.utcnow() + datetime.timedelta(hours=1)
        request = job_request("scheduleDeviceMethod", "*", start=start, cloud_to_device_method=method)
        jobs.create_scheduled_job(request.job_id, request)
        cancelled = jobs.cancel_scheduled_job(request.job_id)
        check(cancelled.status == "cancelled", f"cancelled {cancelled.status}")
        check(jobs.get_scheduled_job(request.job_id).status == "cancelled", "stays cancelled")

    @scenario("registry-delete")
    def _():
        registry.delete_device(offline_id)
        created.remove(offline_id)
        try:
            registry.get_device(offline_id)
        except HttpOperationError as error:
            check(error.response.status_code == 404, f"status {error.response.status_code}")
            return
        raise AssertionError("the deleted device is still there")


if __name__ == "__main__":
    run(main, registry, clients, created)
