"""Small helpers shared by the integration tests."""

import contextlib
import json
import os
import time


def wait_for(predicate, timeout=20.0, interval=0.1):
    """Poll ``predicate`` until it returns something true; fail after ``timeout``.

    A predicate that raises counts as not yet true (a daemon restarting, a device
    not there yet); its last exception is in the failure message.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - reported if it never comes true
            value = exc
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {value!r}")
        time.sleep(interval)


def status(lab, n):
    return json.loads(lab.cli(n, "status", "--json").stdout)


def events(lab, n, *args):
    return [json.loads(line) for line in lab.cli(n, "events", "--json", *args).stdout.splitlines()]


def ps(lab, n):
    """Every container the log knows, by name, as host ``n`` reports it."""
    return {c["name"]: c for c in json.loads(lab.cli(n, "ps", "-a", "--json").stdout)}


def inspect(lab, n, ref):
    return json.loads(lab.cli(n, "inspect", ref).stdout)


def leader_host(lab, asking):
    """The number of the host whose dqlite node leads, as host ``asking`` sees it."""
    address = status(lab, asking)["leader"]
    return next(h.number for h in lab.hosts if h.dqlite_address == address)


@contextlib.contextmanager
def module_lab(hosts: int, tag: str, **kwargs):
    """A lab for one module's tests, built and, however they end, removed; if setting
    it up fails, the daemons' logs are printed first."""
    from lab import Lab

    lab = Lab(hosts, tag=f"{tag}{os.getpid() % 100000}", **kwargs)
    try:
        lab.build()
        yield lab
    except BaseException:
        for h in lab.hosts:
            print(f"----- cantainerd log of {h.name} -----\n{lab.log(h.number)}")
        raise
    finally:
        lab.close()
