"""Throttling conformance with Microsoft's unmodified `azure-iot-hub` (pinned in requirements.lock).

Against an emulator started with `--throttle s1`, a call past one S1 unit's quota raises the SDK's
HttpOperationError with status 429 and the hub's ThrottlingException body (msrest retries only 408 and 5xx, so
the caller's own back-off code is what runs).

Environment: IOTHUB_CONNECTION_STRING (hub owner), REQUESTS_CA_BUNDLE=<ca.pem>, and IOTHUB_THROTTLE_TIER=s1 (this
script spends a minute's quota, so it will not run unless told the hub is throttled). Prints "PASS <name>" /
"FAIL <name>: <why>", then "N passed, M failed"; exits 0 only when nothing failed.
"""

import json
import os
import sys

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import QuerySpecification
from msrest.exceptions import HttpOperationError

from harness import check, scenario, summary

CONNECTION_STRING = os.environ.get("IOTHUB_CONNECTION_STRING")
if not CONNECTION_STRING or os.environ.get("IOTHUB_THROTTLE_TIER", "").lower() != "s1":
    print("needs IOTHUB_CONNECTION_STRING and IOTHUB_THROTTLE_TIER=s1 (an emulator started with --throttle s1)",
          file=sys.stderr)
    sys.exit(2)

registry = IoTHubRegistryManager.from_connection_string(CONNECTION_STRING)


def until_refused(operation, limit):
    """Calls `operation` until it raises (at most `limit` times); returns how many succeeded and the error."""
    for done in range(limit):
        try:
            operation()
        except HttpOperationError as error:
            return done, error
    return limit, None


def check_throttled(error, what):
    check(error is not None, f"{what} was never throttled")
    check(error.response.status_code == 429, f"status {error.response.status_code}")
    code = error.response.headers.get("iothub-errorcode")
    check(code == "ThrottlingException", f"iothub-errorcode {code}")
    body = json.loads(error.response.text or "{}")
    check("ThrottlingException" in body.get("Message", ""), f"Message {body.get('Message')}")


@scenario("registry-past-the-quota-is-429")
def _():
    # The registry quota (100 a minute) may already be partly spent by other clients of this hub.
    succeeded, error = until_refused(lambda: registry.get_device("myDeviceId"), 150)
    check_throttled(error, "get_device")
    check(succeeded <= 101, f"{succeeded} gets passed, more than one S1 unit's minute")


@scenario("query-past-the-quota-is-429")
def _():
    spec = QuerySpecification(query="SELECT * FROM devices")
    succeeded, error = until_refused(lambda: registry.query_iot_hub(spec, None, 10), 40)
    check_throttled(error, "query_iot_hub")
    check(succeeded <= 21, f"{succeeded} queries passed, more than one S1 unit's minute")


sys.exit(0 if summary() == 0 else 1)
