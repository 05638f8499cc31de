"""Module conformance with Microsoft's unmodified Python SDKs (versions pinned in requirements.lock):
`azure-iot-device` `IoTHubModuleClient` (MQTT, and MQTT over WebSockets) beside an `IoTHubDeviceClient` for the
module's own device, and `azure-iot-hub` (`create_module_with_sas/get_module/get_modules/update_module_with_sas/
delete_module`, `get_module_twin/update_module_twin/replace_module_twin`, `invoke_device_module_method`, queries
over `devices.modules`).

Environment: IOTHUB_CONNECTION_STRING (hub owner), REQUESTS_CA_BUNDLE=<ca.pem> and IOTHUB_CA_FILE=<ca.pem> for the
emulator; with IOTHUB_EVENTHUB_CONNECTION_STRING a module's telemetry is read back from the Event Hubs-compatible
endpoint. Prints "PASS <name>" / "FAIL <name>: <why>" lines, then "N passed, M failed"; exits 0 only when nothing
failed. The devices it creates (and so their modules) have random ids and are deleted at the end.
"""

import os
import secrets
import time

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, QuerySpecification, Twin, TwinProperties

from harness import check, device_maker, hub_settings, run, scenario

CONNECTION_STRING, HOST, CA_PEM = hub_settings()
TLS = {"server_verification_cert": CA_PEM} if CA_PEM else {}

registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
suffix = secrets.token_hex(5)
created = []
clients = []
make_device = device_maker(registry, HOST, "conf-py-mod", suffix, created)


def add_module(device_id, module_id):
    """Registers a module with hub-generated keys and returns its connection string."""
    module = registry.create_module_with_sas(device_id, module_id, "", "", "")
    key = module.authentication.symmetric_key.primary_key
    return f"HostName={HOST};DeviceId={device_id};ModuleId={module_id};SharedAccessKey={key}"


def answer_whoami(client, who):
    def on_method(request):
        payload = {"who": who, "asked": (request.payload or {}).get("asked")}
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, payload))
    client.on_method_request_received = on_method


def whoami(device_id, module_id=None):
    request = CloudToDeviceMethod(method_name="whoami", payload={"asked": module_id or device_id},
                                  response_timeout_in_seconds=10, connect_timeout_in_seconds=5)
    if module_id is None:
        return registry.invoke_device_method(device_id, request)
    return registry.invoke_device_module_method(device_id, module_id, request)


def status_of(error):
    """The HTTP status of an azure-iot-hub error (msrest HttpOperationError)."""
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def expect_error(call, what):
    try:
        call()
    except Exception as error:  # the error itself is what the scenario checks
        return error
    raise AssertionError(f"{what} succeeded")


def wait_until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def main():
    device_id, device_string = make_device("edge")
    strings = {}
    module_patches, device_patches = [], []

    @scenario("module-identity-create-get-list")
    def _():
        strings["filter"] = add_module(device_id, "filter")
        module = registry.get_module(device_id, "filter")
        check((module.device_id, module.module_id) == (device_id, "filter"), f"ids {module.device_id}/{module.module_id}")
        check(len(module.authentication.symmetric_key.primary_key) == 44, "a generated key")
        check(module.etag and module.generation_id, "etag and generationId")
        strings["second"] = add_module(device_id, "second")
        check([m.module_id for m in registry.get_modules(device_id)] == ["filter", "second"], "both listed in order")

    @scenario("module-identity-duplicate-missing-and-update")
    def _():
        duplicate = expect_error(lambda: registry.create_module_with_sas(device_id, "filter", "", "", ""), "a duplicate")
        check(status_of(duplicate) == 409, f"duplicate: {duplicate}")
        missing = expect_error(lambda: registry.get_module(device_id, "nosuchmodule"), "a missing module")
        check(status_of(missing) == 404, f"missing: {missing}")
        module = registry.get_module(device_id, "second")
        keys = module.authentication.symmetric_key
        updated = registry.update_module_with_sas(device_id, "second", "conformance", module.etag,
                                                  keys.secondary_key, keys.primary_key)
        check(updated.authentication.symmetric_key.primary_key == keys.secondary_key, "the keys are swapped")
        check(updated.managed_by == "conformance", f"managedBy {updated.managed_by}")
        stale = expect_error(lambda: registry.update_module_with_sas(device_id, "second", "x", module.etag,
                                                                     keys.primary_key, keys.secondary_key), "stale")
        check(status_of(stale) == 412, f"stale etag: {stale}")
        strings["second"] = (f"HostName={HOST};DeviceId={device_id};ModuleId=second;"
                             f"SharedAccessKey={keys.secondary_key}")

    device = IoTHubDeviceClient.create_from_connection_string(device_string, **TLS)
    clients.append(device)
    module = IoTHubModuleClient.create_from_connection_string(strings.get("filter", ""), **TLS)
    clients.append(module)

    @scenario("device-and-module-connected-together")
    def _():
        device.connect()
        answer_whoami(device, "device")
        module.connect()
        answer_whoami(module, "module")
        check(registry.get_module(device_id, "filter").connection_state == "Connected", "the module is connected")
        check(registry.get_device(device_id).connection_state == "Connected", "the device is connected")

    @scenario("module-method-round-trip-while-the-device-answers-its-own")
    def _():
        to_module = whoami(device_id, "filter")
        check(to_module.status == 200 and to_module.payload["who"] == "module", f"module: {to_module.payload}")
        to_device = whoami(device_id)
        check(to_device.status == 200 and to_device.payload["who"] == "device", f"device: {to_device.payload}")

    @scenario("module-desired-change-reaches-only-that-module")
    def _():
        module.on_twin_desired_properties_patch_received = module_patches.append
        device.on_twin_desired_properties_patch_received = device_patches.append
        twin = registry.get_module_twin(device_id, "filter")
        check((twin.device_id, twin.module_id) == (device_id, "filter"), f"ids {twin.device_id}/{twin.module_id}")
        registry.update_module_twin(device_id, "filter", Twin(properties=TwinProperties(desired={"threshold": 42})),
                                    twin.etag)
        check(wait_until(lambda: any(p.get("threshold") == 42 for p in module_patches)), f"module saw {module_patches}")
        time.sleep(0.5)
        check(not any("threshold" in p for p in device_patches), f"the device saw {device_patches}")
        check("threshold" not in registry.get_twin(device_id).properties.desired, "the device twin is untouched")

    @scenario("module-twin-replace")
    def _():
        twin = registry.get_module_twin(device_id, "filter")
        twin.tags = {"role": "filter"}
        twin.properties = TwinProperties(desired={"threshold": 43})
        replaced = registry.replace_module_twin(device_id, "filter", twin)
        check(replaced.tags == {"role": "filter"}, f"tags {replaced.tags}")
        check(replaced.properties.desired.get("threshold") == 43, f"desired {replaced.properties.desired}")
        check(wait_until(lambda: any(p.get("threshold") == 43 for p in module_patches)), f"module saw {module_patches}")

    @scenario("module-reported-properties-read-by-the-service")
    def _():
        module.patch_twin_reported_properties({"filtered": 7, "state": "running"})
        reported = registry.get_module_twin(device_id, "filter").properties.reported
        check(reported.get("filtered") == 7 and reported.get("state") == "running", f"reported {reported}")
        check("filtered" not in registry.get_twin(device_id).properties.reported, "the device twin is untouched")
        check(module.get_twin()["reported"].get("filtered") == 7, "the module reads its own twin back")

    @scenario("module-telemetry-read-back-with-its-module-id")
    def _():
        message = Message('{"filtered": 1}')
        message.message_id = f"module-{suffix}"
        if not os.environ.get("IOTHUB_EVENTHUB_CONNECTION_STRING"):
            # Without the Event Hub-compatible connection string the message can only be checked as acknowledged.
            module.send_message(message)
            return
        from eventhub_reader import Reader, consumer
        reader = Reader(consumer(), device_id, starting_position="@latest")
        try:
            time.sleep(2)  # the receivers attach before the message is sent
            module.send_message(message)
            check(wait_until(lambda: any(e.message_id == message.message_id for e in reader.events), 20),
                  f"read {[e.message_id for e in reader.events]}, errors {reader.errors}")
            event = next(e for e in reader.events if e.message_id == message.message_id)
            system = event.system_properties
            check(system.get(b"iothub-connection-module-id") == b"filter", f"module id {system}")
            generation = registry.get_module(device_id, "filter").generation_id
            check(system.get(b"iothub-connection-auth-generation-id") == generation.encode(), f"generation {system}")
        finally:
            reader.close()

    @scenario("module-over-websockets-answers-methods")
    def _():
        over_ws = IoTHubModuleClient.create_from_connection_string(strings["second"], websockets=True, **TLS)
        clients.append(over_ws)
        over_ws.connect()
        answer_whoami(over_ws, "ws-module")
        result = whoami(device_id, "second")
        check(result.status == 200 and result.payload["who"] == "ws-module", f"answered {result.payload}")

    @scenario("devices-modules-query-across-pages")
    def _():
        for extra in ("q1", "q2", "q3"):
            add_module(device_id, extra)
        expected = [m.module_id for m in registry.get_modules(device_id)]
        query = QuerySpecification(query=f"SELECT * FROM devices.modules WHERE deviceId = '{device_id}'")
        found, token, pages = [], None, 0
        while pages < 20:
            result = registry.query_iot_hub(query, token, 2)
            pages += 1
            found.extend(twin.module_id for twin in result.items)
            token = result.continuation_token
            if not token:
                break
        check(found == expected, f"found {found}, expected {expected}")
        check(pages == 3, f"pages {pages}")

    @scenario("deleting-a-module-and-a-device-with-modules")
    def _():
        registry.delete_module(device_id, "q3")
        gone = expect_error(lambda: registry.get_module(device_id, "q3"), "get after delete")
        check(status_of(gone) == 404, f"after delete: {gone}")
        other_id, _ = make_device("gone")
        add_module(other_id, "m")
        registry.delete_device(other_id)
        cascaded = expect_error(lambda: registry.get_module(other_id, "m"), "get after the device was deleted")
        check(status_of(cascaded) == 404, f"after the device went: {cascaded}")



if __name__ == "__main__":
    run(main, registry, clients, created, seconds=180)
