"""What every Python conformance script shares: `check`, the `scenario` decorator (one "PASS <name>" or
"FAIL <name>: <why>" line per scenario, every failure reported and the run going on) and `summary`."""

import os
import sys

results = []


def hub_settings():
    """(owner connection string, host name, CA PEM or None) from IOTHUB_CONNECTION_STRING and IOTHUB_CA_FILE;
    exits 2 when the connection string is not set."""
    connection_string = os.environ.get("IOTHUB_CONNECTION_STRING")
    if not connection_string:
        print("IOTHUB_CONNECTION_STRING is not set: give the hub owner connection string (the emulator prints it).",
              file=sys.stderr)
        sys.exit(2)
    host = dict(part.split("=", 1) for part in connection_string.split(";"))["HostName"]
    ca_file = os.environ.get("IOTHUB_CA_FILE")
    ca_pem = open(ca_file).read() if ca_file else None
    return connection_string, host, ca_pem


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def scenario(name):
    """Runs the decorated function at once as the scenario `name`."""
    def run(body):
        try:
            body()
            results.append(True)
            print(f"PASS {name}", flush=True)
        except Exception as error:  # report every failure and go on
            results.append(False)
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
        return body
    return run


def summary(extra_failures=0):
    """Prints "N passed, M failed" and returns M."""
    passed = sum(results)
    failed = len(results) - passed + extra_failures
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed


def device_maker(registry, host, prefix, suffix, created):
    """A `create_device(label)` that registers `<prefix>-<label>-<suffix>` with SAS keys, remembers it in `created`
    for `run` to delete, and returns its id and connection string."""
    def create_device(label):
        device_id = f"{prefix}-{label}-{suffix}"
        device = registry.create_device_with_sas(device_id, "", "", "enabled")
        created.append(device_id)
        key = device.authentication.symmetric_key.primary_key
        return device_id, f"HostName={host};DeviceId={device_id};SharedAccessKey={key}"
    return create_device


def run(main, registry, clients, created, seconds=150):
    """Runs `main` with a time limit, then shuts the device `clients` down, deletes the `created` devices and
    exits with 0 only when every scenario passed (an exception out of `main` counts as one more failure)."""
    import signal
    import traceback

    def on_timeout(signum, frame):
        print(f"FAIL timeout: the scenarios did not finish within {seconds} s", flush=True)
        os._exit(1)

    def finish(code):
        for client in clients:
            try:
                client.shutdown()
            except Exception:
                pass
        for device_id in created:
            try:
                registry.delete_device(device_id)
            except Exception:
                pass
        os._exit(0 if summary(code) == 0 else 1)

    signal.signal(signal.SIGALRM, on_timeout)
    signal.alarm(seconds)
    try:
        main()
        finish(0)
    except Exception:
        print(f"FAIL unexpected: {traceback.format_exc()}", flush=True)
        finish(1)
