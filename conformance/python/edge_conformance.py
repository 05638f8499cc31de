"""IoT Edge devices and their children with Microsoft's unmodified `azure-iot-hub` (pinned in requirements.lock):
`IoTHubRegistryManager.create_device_with_sas(..., iot_edge=True)` gets a generated scope and the system modules,
a leaf made a child with `device_scope`, a nested Edge device with `parent_scopes`, a made-up scope refused, the
hierarchy in queries, and a leaf freed again with `update_device_with_sas(..., device_scope="")`.

Environment: IOTHUB_CONNECTION_STRING (hub owner), REQUESTS_CA_BUNDLE=<ca.pem> for the emulator. Prints
"PASS <name>" / "FAIL <name>: <why>" lines, then "N passed, M failed"; exits 0 only when nothing failed. The devices
it creates have random ids and are deleted at the end.
"""

import secrets

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import QuerySpecification
from msrest.exceptions import HttpOperationError

from harness import check, hub_settings, run, scenario

CONNECTION_STRING, HOST, _ = hub_settings()
registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
suffix = secrets.token_hex(4)
created = []
state = {}


def create(device_id, **options):
    device = registry.create_device_with_sas(device_id, "", "", "enabled", **options)
    created.append(device_id)
    return device


def ids_where(condition):
    result = registry.query_iot_hub(QuerySpecification(query=f"SELECT deviceId FROM devices WHERE {condition}"))
    return sorted(row["deviceId"] if isinstance(row, dict) else row.device_id for row in result.items)


def main():
    gateway_id, leaf_id, nested_id = (f"conf-py-edge-{role}-{suffix}" for role in ("gw", "leaf", "nested"))

    @scenario("py-edge-device-gets-its-scope")
    def _():
        gateway = create(gateway_id, iot_edge=True)
        state["scope"] = gateway.device_scope
        check(gateway.device_scope == f"ms-azure-iot-edge://{gateway_id}-{gateway.generation_id}",
              f"device_scope {gateway.device_scope}")
        check(gateway.capabilities.iot_edge is True, "iot_edge")

    @scenario("py-edge-device-has-system-modules")
    def _():
        modules = sorted(m.module_id for m in registry.get_modules(gateway_id))
        check(modules == ["$edgeAgent", "$edgeHub"], f"modules {modules}")

    @scenario("py-leaf-child-by-device-scope")
    def _():
        leaf = create(leaf_id, device_scope=state["scope"])
        check(leaf.device_scope == state["scope"], f"device_scope {leaf.device_scope}")
        check(leaf.parent_scopes == [state["scope"]], f"parent_scopes {leaf.parent_scopes}")

    @scenario("py-nested-edge-child-by-parent-scopes")
    def _():
        nested = create(nested_id, iot_edge=True, parent_scopes=[state["scope"]])
        check(nested.device_scope not in (None, state["scope"]), f"own device_scope {nested.device_scope}")
        check(nested.parent_scopes == [state["scope"]], f"parent_scopes {nested.parent_scopes}")

    @scenario("py-a-scope-no-edge-device-owns-is-refused")
    def _():
        stray = f"conf-py-edge-stray-{suffix}"
        try:
            create(stray, device_scope=f"ms-azure-iot-edge://nobody-{suffix}-1")
        except HttpOperationError as error:
            check(error.response.status_code == 400, f"status {error.response.status_code}")
            return
        raise AssertionError("a made-up scope was accepted")

    @scenario("py-queries-see-the-hierarchy")
    def _():
        children = ids_where(f"ARRAY_CONTAINS(parentScopes, '{state['scope']}')")
        check(children == sorted([leaf_id, nested_id]), f"children {children}")
        check(ids_where(f"capabilities.iotEdge = true AND deviceId = '{gateway_id}'") == [gateway_id], "edge query")

    @scenario("py-leaf-freed-with-an-empty-scope")
    def _():
        leaf = registry.get_device(leaf_id)
        freed = registry.update_device_with_sas(leaf_id, "*", "", "", "enabled", device_scope="")
        check(not freed.device_scope, f"device_scope {freed.device_scope}")
        check(not freed.parent_scopes, f"parent_scopes {freed.parent_scopes}")
        check(freed.etag != leaf.etag, "a new etag")


if __name__ == "__main__":
    run(main, registry, [], created, seconds=90)
