"""Automatic device management (configurations) with Microsoft's unmodified `azure-iot-hub` (pinned in
requirements.lock): `IoTHubConfigurationManager` (`create_configuration/get_configuration/get_configurations/
update_configuration/delete_configuration`, `test_configuration_queries`, `apply_configuration_on_edge_device`) beside
`IoTHubRegistryManager` for the devices a configuration targets and the twins it writes.

Environment: IOTHUB_CONNECTION_STRING (hub owner), REQUESTS_CA_BUNDLE=<ca.pem> for the emulator;
IOTHUB_CONFIGURATION_WAIT_SECONDS (default 20) bounds each wait for what the hub applies in the background (a real
hub may need minutes). Prints "PASS <name>" / "FAIL <name>: <why>" lines, then "N passed, M failed"; exits 0 only
when nothing failed. The configuration and devices it creates have random ids and are deleted at the end.
"""

import os
import secrets
import time

from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Configuration, ConfigurationContent, ConfigurationMetrics, \
    ConfigurationQueriesTestInput, Twin
from msrest.exceptions import HttpOperationError

from harness import check, hub_settings, run, scenario

CONNECTION_STRING, HOST, _ = hub_settings()
WAIT = float(os.environ.get("IOTHUB_CONFIGURATION_WAIT_SECONDS", "20"))
registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
configurations = IoTHubConfigurationManager.from_connection_string(CONNECTION_STRING)
suffix = secrets.token_hex(4)
config_id = f"conf-py-cfg-{suffix}"
prop = f"py{suffix}"
device_content = {f"properties.desired.{prop}": {"rate": 5}}
target = f"tags.pysuite='{suffix}'"
metric_query = "SELECT deviceId FROM devices WHERE properties.reported.rate > 1"
device_ids = [f"conf-py-cfg-{i}-{suffix}" for i in range(2)]
edge_id = f"conf-py-cfg-edge-{suffix}"
created = []  # devices, deleted by harness.run
configs_created = []
state = {}

EDGE_AGENT = {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker",
                "settings": {"minDockerVersion": "v1.25", "loggingOptions": ""}},
    "systemModules": {
        "edgeAgent": {"type": "docker",
                      "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.4", "createOptions": "{}"}},
        "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                    "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.4", "createOptions": "{}"}},
    },
    "modules": {
        "SimulatedTemperatureSensor": {
            "version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
            "settings": {"image": "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.4",
                         "createOptions": "{}"}},
    },
}
EDGE_HUB = {
    "schemaVersion": "1.1",
    "routes": {"upstream": "FROM /messages/* INTO $upstream"},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
}


def status_of(call):
    """The HTTP status `call` fails with (None when it succeeds)."""
    try:
        call()
    except HttpOperationError as error:
        return error.response.status_code
    return None


def poll(what, read, done, seconds=WAIT):
    """Reads every 0.2 s until `done(value)`; returns that value, or fails with the last one after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {seconds:g} s; last {value}")
        time.sleep(0.2)


def desired_rate(twin):
    entry = (twin.properties.desired or {}).get(prop)
    return entry.get("rate") if isinstance(entry, dict) else None


def twin_configurations(twin):
    """The twin's `configurations` member (not in the SDK's Twin model; msrest keeps it as an additional property)."""
    return (getattr(twin, "additional_properties", None) or {}).get("configurations")


def main():
    try:
        scenarios()
    finally:
        for configuration_id in configs_created:
            try:
                configurations.delete_configuration(configuration_id)
            except Exception:
                pass


def scenarios():
    @scenario("py-configuration-create-get-list")
    def _():
        configuration = Configuration(
            id=config_id, labels={"suite": "python", "run": suffix},
            content=ConfigurationContent(device_content=device_content), target_condition=target, priority=1,
            metrics=ConfigurationMetrics(queries={"fast": metric_query}))
        made = configurations.create_configuration(configuration)
        configs_created.append(config_id)
        check(made.id == config_id, f"created id {made.id}")
        check(made.etag == "MQ==", f"created etag {made.etag}")

        got = configurations.get_configuration(config_id)
        check(got.etag == "MQ==", f"etag {got.etag}")
        check(got.content is not None and got.content.device_content == device_content,
              f"content {got.content and got.content.device_content}")
        check(got.target_condition == target, f"targetCondition {got.target_condition}")
        check(got.priority == 1, f"priority {got.priority}")
        check(got.labels == {"suite": "python", "run": suffix}, f"labels {got.labels}")
        check(got.metrics is not None and got.metrics.queries == {"fast": metric_query},
              f"metrics {got.metrics and got.metrics.queries}")
        check(got.created_time_utc is not None, "createdTimeUtc")
        queries = (got.system_metrics and got.system_metrics.queries) or {}
        check(queries.get("targetedCount") == f"select deviceId from devices where {target}",
              f"systemMetrics.queries {queries}")
        check(queries.get("appliedCount")
              == f"select deviceId from devices where configurations.[[{config_id}]].status = 'Applied'",
              f"systemMetrics.queries {queries}")

        listed = [c.id for c in configurations.get_configurations(max_count=100)]
        check(config_id in listed, f"{config_id} not in the list {listed}")

        again = status_of(lambda: configurations.create_configuration(configuration))
        check(again == 409, f"creating the id again: status {again}")

    @scenario("py-configuration-applied-to-targeted-devices")
    def _():
        for device_id in device_ids:
            registry.create_device_with_sas(device_id, "", "", "enabled")
            created.append(device_id)
            registry.update_twin(device_id, Twin(tags={"pysuite": suffix}))
        for device_id in device_ids:
            twin = poll(f"{device_id} desired {prop}.rate == 5", lambda: registry.get_twin(device_id),
                        lambda twin: desired_rate(twin) == 5)
            poll(f"{device_id} configurations.{config_id}.status Applied", lambda: registry.get_twin(device_id),
                 lambda twin: ((twin_configurations(twin) or {}).get(config_id) or {}).get("status") == "Applied")
        got = poll("systemMetrics.results targetedCount 2, appliedCount 2",
                   lambda: configurations.get_configuration(config_id),
                   lambda got: [((got.system_metrics and got.system_metrics.results) or {}).get(name)
                                for name in ("targetedCount", "appliedCount")] == [2, 2])
        check(got.etag == "MQ==", f"the etag moved without an update: {got.etag}")

    @scenario("py-configuration-test-queries")
    def _():
        answer = configurations.test_configuration_queries(ConfigurationQueriesTestInput(
            target_condition="tags.a='b'",
            custom_metric_queries={"ok": "SELECT deviceId FROM devices", "bad": "SELECT FROM WHERE"}))
        check(not answer.target_condition_error, f"targetConditionError {answer.target_condition_error!r}")
        errors = answer.custom_metric_query_errors or {}
        check("ok" in errors and not errors["ok"], f"customMetricQueryErrors {errors}")
        check(bool(errors.get("bad")), f"customMetricQueryErrors {errors}")

    @scenario("py-configuration-update-with-etag")
    def _():
        current = configurations.get_configuration(config_id)
        stale = current.etag
        current.priority = 7
        current.labels = {"suite": "python", "run": suffix, "updated": "yes"}
        updated = configurations.update_configuration(current, current.etag)
        check(updated.etag == "Mg==", f"updated etag {updated.etag}")
        check(updated.priority == 7, f"updated priority {updated.priority}")
        check(updated.labels == current.labels, f"updated labels {updated.labels}")

        got = configurations.get_configuration(config_id)
        check(got.etag == "Mg==" and got.priority == 7 and got.labels == current.labels,
              f"read back etag {got.etag} priority {got.priority} labels {got.labels}")
        check(got.created_time_utc == current.created_time_utc,
              f"createdTimeUtc {current.created_time_utc} -> {got.created_time_utc}")
        check(got.content.device_content == device_content, f"content {got.content.device_content}")

        current.priority = 9
        code = status_of(lambda: configurations.update_configuration(current, stale))
        check(code == 412, f"an update with the stale etag {stale}: status {code}")
        check(configurations.get_configuration(config_id).priority == 7, "the stale update changed the priority")

    @scenario("py-configuration-apply-on-edge-device")
    def _():
        registry.create_device_with_sas(edge_id, "", "", "enabled", iot_edge=True)
        created.append(edge_id)
        configurations.apply_configuration_on_edge_device(edge_id, ConfigurationContent(modules_content={
            "$edgeAgent": {"properties.desired": EDGE_AGENT},
            "$edgeHub": {"properties.desired": EDGE_HUB},
        }))
        agent = registry.get_module_twin(edge_id, "$edgeAgent").properties.desired
        for key, value in EDGE_AGENT.items():
            check(agent.get(key) == value, f"$edgeAgent desired {key}: {agent.get(key)}")
        hub = registry.get_module_twin(edge_id, "$edgeHub").properties.desired
        for key, value in EDGE_HUB.items():
            check(hub.get(key) == value, f"$edgeHub desired {key}: {hub.get(key)}")

    @scenario("py-configuration-delete")
    def _():
        configurations.delete_configuration(config_id)
        configs_created.remove(config_id)
        code = status_of(lambda: configurations.get_configuration(config_id))
        check(code == 404, f"get after delete: status {code}")
        listed = [c.id for c in configurations.get_configurations(max_count=100)]
        check(config_id not in listed, f"{config_id} still listed")


if __name__ == "__main__":
    run(main, registry, [], created, seconds=int(60 + 4 * WAIT))
