"""What every Python conformance script shares: `check`, the `scenario` decorator (one "PASS <name>" or
"FAIL <name>: <why>" line per scenario, every failure reported and the run going on) and `summary`."""

results = []


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
