"""The layers of the tree: each package imports only the ones below it, and no module
imports itself back through others (docs/ARCHITECTURE.md, "Layers").

Read from the source (every ``import``, at the top of a module or inside a
function), so it holds for what a module may import late as well.
"""

import ast
import os

import cantainer

ROOT = os.path.dirname(cantainer.__file__)

# What each part of the package may import, besides itself and the standard library.
ALLOWED = {
    "errors": set(),
    "ids": set(),
    "child": set(),
    "config": {"errors"},
    "kernel": {"errors", "child"},
    "events": {"errors", "ids"},
    "projections": {"errors", "events", "kernel.names"},
    "pull": {"errors", "kernel"},
    "trust": {"errors", "events", "child"},
    "actors": {"errors", "events", "kernel", "projections"},
    "api": {"errors", "child", "config", "events", "kernel", "projections", "pull", "trust"},
    "daemon": {"errors", "config", "events", "kernel", "projections", "actors", "api",
               "trust"},
    "cli": {"errors", "config", "ids", "projections.view"},  # view: replay --file, when it runs
}


def modules() -> dict[str, str]:
    """module name -> path, for every module of the package."""
    found = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def imports(module: str, path: str) -> set[str]:
    """The cantainer modules ``module`` imports (anywhere in it)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    every = modules()
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # a module of the package, or a name of ``base``
                name = f"{base}.{alias.name}"
                out.add(name if name in every else base)
    return {m for m in out if m in every and m != module}


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_package_imports_only_what_is_below_it():
    every = modules()
    assert {part(m) for m in every} - {""} == set(ALLOWED), "a part of the tree has no rule"
    upward = []
    for module, path in sorted(every.items()):
        mine = part(module)
        for target in sorted(imports(module, path)):
            theirs = part(target)
            if theirs == mine or target == "cantainer":
                continue
            rel = target.removeprefix("cantainer.")
            if not any(rel == a or rel.startswith(a + ".") or theirs == a
                       for a in ALLOWED[mine]):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_no_import_circles():
    every = modules()
    graph = {m: imports(m, p) for m, p in every.items()}
    # A package's __init__ that only re-exports its modules is a face, not a room:
    # its submodules importing each other through it is no circle.
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if n.startswith(m + ".") or m.startswith(n + "."):
                continue  # a package and its own modules
            if state.get(n) == 1:
                circles.append(path[path.index(n):] + [n] if n in path else [m, n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, circles


def test_the_events_package_loads_no_dqlite():
    import subprocess
    import sys

    code = ("import sys, cantainer.events, cantainer.projections.view; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dqliteclient', 'dqlitewire', 'pykka', 'pyroute2', 'ctypes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", "the catalogue and the projections need no engine"


def test_the_daemon_loads_no_pyroute2():
    """The daemon speaks rtnetlink itself (kernel/rtnl.py): pyroute2's package imports
    every module it has (231, 13 MiB of every daemon's memory); it is the tests' and
    the lab's only."""
    import subprocess
    import sys

    code = ("import sys, cantainer.daemon.main, cantainer.daemon.daemon; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyroute2'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
