"""Fixtures that build labs of hosts from network namespaces (needs root)."""


import pytest

from lab import Lab


@pytest.fixture
def make_lab(request):
    """``make_lab(n)`` builds an n-host lab; all of it is removed after the test."""
    labs = []

    def make(hosts: int = 3, **kwargs) -> Lab:
        lab = Lab(hosts, **kwargs)
        labs.append(lab)
        lab.build()
        return lab

    yield make
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    for lab in labs:
        if failed:
            for h in lab.hosts:
                print(f"----- cantainerd log of {h.name} -----\n{lab.log(h.number)}")
        lab.close()
