import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome so fixtures can dump logs of failed tests."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``root`` are never skipped quietly: without root the run stops."""
    if os.geteuid() != 0 and any(item.get_closest_marker("root") for item in items):
        raise pytest.UsageError("the selected tests include integration tests, which need "
                                "root; run as root, or select the others with -m 'not root'")
