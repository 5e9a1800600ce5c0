"""How the daemon starts a Python child of its own: the shim, ``exec``'s entry and the
key and certificate child.  This interpreter with ``-P``, so nothing from the daemon's
working directory is imported in a process that runs as root in a container's
namespaces or holds the CA's key, and this package's root first on ``PYTHONPATH``,
so ``-m cantainer...`` finds this very package.
"""

from __future__ import annotations

import os
import sys

import cantainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cantainer.__file__)))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))


def argv(module: str, *args: str) -> list[str]:
    """``python -P -m MODULE ARGS``, to run with ``env=ENV``."""
    return [sys.executable, "-P", "-m", module, *args]
