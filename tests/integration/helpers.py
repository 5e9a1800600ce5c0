"""Small helpers shared by the integration tests."""

import json
import time


def wait_for(predicate, timeout=20.0, interval=0.1):
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {value!r}")
        time.sleep(interval)


def status(lab, n):
    return json.loads(lab.cli(n, "status", "--json").stdout)


def events(lab, n, *args):
    return [json.loads(line) for line in lab.cli(n, "events", "--json", *args).stdout.splitlines()]
