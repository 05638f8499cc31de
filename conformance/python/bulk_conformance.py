"""Bulk identity operations with Microsoft's unmodified `azure-iot-hub` (pinned in requirements.lock):
`IoTHubRegistryManager.bulk_create_or_update_devices` with `ExportImportDevice` items (create with twin data,
update, delete), answered item by item.

Environment: IOTHUB_CONNECTION_STRING (hub owner), REQUESTS_CA_BUNDLE=<ca.pem> for the emulator. Prints
"PASS <name>" / "FAIL <name>: <why>" lines, then "N passed, M failed"; exits 0 only when nothing failed. The devices
it creates have random ids and are deleted at the end.
"""

import secrets

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import ExportImportDevice, PropertyContainer

from harness import check, hub_settings, run, scenario

CONNECTION_STRING, HOST, _ = hub_settings()
registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)
suffix = secrets.token_hex(4)
ids = [f"conf-py-bulk-{i}-{suffix}" for i in range(3)]
created = list(ids)


def main():
    @scenario("py-bulk-create-with-twin-data")
    def _():
        items = [ExportImportDevice(id=device_id, import_mode="create", status="enabled",
                                    tags={"batch": suffix},
                                    properties=PropertyContainer(desired={"interval": 5})) for device_id in ids]
        result = registry.bulk_create_or_update_devices(items)
        check(result.is_successful, f"errors {result.errors}")
        twin = registry.get_twin(ids[0])
        check(twin.tags == {"batch": suffix}, f"tags {twin.tags}")
        check(twin.properties.desired["interval"] == 5, f"desired {twin.properties.desired}")

    @scenario("py-bulk-errors-per-item")
    def _():
        result = registry.bulk_create_or_update_devices([
            ExportImportDevice(id=ids[0], import_mode="create"),
            ExportImportDevice(id=f"conf-py-bulk-none-{suffix}", import_mode="update"),
            ExportImportDevice(id=ids[1], import_mode="update", status="disabled"),
        ])
        check(not result.is_successful, "not all succeeded")
        codes = sorted((e.device_id, str(e.error_code)) for e in result.errors)
        check(codes == sorted([(ids[0], "409001"), (f"conf-py-bulk-none-{suffix}", "404001")]), f"errors {codes}")
        check(registry.get_device(ids[1]).status == "disabled", "the good item went through")

    @scenario("py-bulk-delete")
    def _():
        result = registry.bulk_create_or_update_devices(
            [ExportImportDevice(id=device_id, import_mode="delete") for device_id in ids])
        check(result.is_successful, f"errors {result.errors}")
        created.clear()


if __name__ == "__main__":
    run(main, registry, [], created, seconds=90)
