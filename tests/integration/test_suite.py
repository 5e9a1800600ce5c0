"""The suite's own promise: ``-m "not slow"`` runs without root (README)."""

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_fast_tests_pass_for_a_user_without_root():
    """In a user namespace as ``nobody``: no capabilities on this machine, so nothing
    that needs root (namespaces, mounts, cgroups) could pass there."""
    argv = ["unshare", "--user", "--map-user=65534", "--map-group=65534",
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
    assert "skipped" not in result.stdout, "nothing skipped quietly either"
    whoami = subprocess.run(["unshare", "--user", "--map-user=65534", "id", "-u"],
                            capture_output=True, text=True, check=True)
    assert whoami.stdout.strip() == "65534"
