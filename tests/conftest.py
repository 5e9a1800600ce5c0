import os

import pytest
from hypothesis import settings

# A loaded 2-core machine runs the integration labs beside the property tests:
# hypothesis's default 200 ms deadline per example would fail them for being slow,
# not wrong.  Examples stay bounded by max_examples.
settings.register_profile("cantainer", deadline=None)
settings.load_profile("cantainer")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome so fixtures can dump logs of failed tests."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_collection_finish(session):
    """Tests marked ``root`` are never skipped quietly: without root the run stops.

    Runs after ``-m``/``-k`` have deselected, so ``-m "not slow"`` (or
    ``"not root"``) works for a user without root, as the README says.
    """
    if os.geteuid() != 0 and any(item.get_closest_marker("root") for item in session.items):
        raise pytest.UsageError("the selected tests include integration tests, which need "
                                "root; run as root, or select the others with -m 'not root'")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A test that needs root is marked slow too, so that ``-m "not slow"`` never
    needs root (checked before ``-m`` deselects anything)."""
    unmarked = [item.nodeid for item in items
                if item.get_closest_marker("root") and not item.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError(f"marked root but not slow: {', '.join(unmarked[:3])}")
