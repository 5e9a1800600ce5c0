"""Images through the daemon; pulling from a mirror served inside a lab host."""

import contextlib
import hashlib
import http.server
import json
import os
import threading

import pytest

from cantainer.kernel import netns
from lab import plumbing
from tests.unit.test_images import alpine_like

pytestmark = [pytest.mark.root, pytest.mark.slow]


@contextlib.contextmanager
def serving(ns: str, directory: str):
    """An HTTP server of ``directory`` on 127.0.0.1 inside network namespace ``ns``;
    yields its base URL."""
    started, servers = threading.Event(), []

    def serve():
        netns.enter(ns)
        handler = lambda *a: Quiet(*a, directory=directory)  # noqa: E731
        servers.append(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler))
        started.set()
        servers[0].serve_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{servers[0].server_address[1]}"
    finally:
        servers[0].shutdown()
        thread.join(10)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A mirror laid out like Alpine's CDN (3.20.3 good, 3.20.4 with a wrong digest)."""
    arch = os.uname().machine
    releases = tmp_path / "alpine" / "v3.20" / "releases" / arch
    releases.mkdir(parents=True)
    tarball = releases / f"alpine-minirootfs-3.20.3-{arch}.tar.gz"
    alpine_like(tarball)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    (releases / f"{tarball.name}.sha256").write_text(f"{digest}  {tarball.name}\n")
    bad = releases / f"alpine-minirootfs-3.20.4-{arch}.tar.gz"
    alpine_like(bad)
    (releases / f"{bad.name}.sha256").write_text("0" * 64 + f"  {bad.name}\n")
    return str(tmp_path), digest


def test_pull_import_ls_rm(make_lab, mirror, tmp_path):
    from cantainer.kernel.images import ImageStore
    from cantainer.pull import pull_alpine
    root, digest = mirror
    name = f"ctimg{os.getpid() % 100000}"
    netns.create(name)
    try:
        plumbing.set_link_state(name, "lo", True)
        with serving(name, root) as base:
            url = f"{base}/alpine"
            store = ImageStore(str(tmp_path / "store"))
            meta = netns.run_in(name, lambda: pull_alpine(store, "alpine:3.20.3", url))
            assert meta["sha256"] == digest and meta["source"].startswith(url)
            sh = os.path.join(store.rootfs("alpine:3.20.3"), "bin/sh")
            assert os.readlink(sh) == "/bin/busybox"
            with pytest.raises(Exception, match="does not match the published 0000"):
                netns.run_in(name, lambda: pull_alpine(store, "alpine:3.20.4", url))
            with pytest.raises(Exception, match="cannot download"):
                netns.run_in(name, lambda: pull_alpine(store, "alpine:3.19.1", url))
            assert [i["tag"] for i in store.list()] == ["3.20.3"]
    finally:
        netns.remove(name)

    # The same through a daemon and the CLI: a mirror its host reaches, a file import.
    lab = make_lab(1)
    lab.start(1)
    with serving(lab.host(1).netns, root) as base:
        pulled = lab.cli(1, "image", "pull", "alpine:3.20.3", "--mirror", f"{base}/alpine")
        assert pulled.stdout == f"alpine:3.20.3 sha256:{digest}\n"
        wrong = lab.cli(1, "image", "pull", "alpine:3.20.4", "--mirror", f"{base}/alpine",
                        check=False)
        assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1
        assert "does not match the published 0000" in wrong.stderr
    ran = lab.cli(1, "run", "--rm", "-n", "198.18.0.0/24", "alpine:3.20.3", "sh", "-c",
                  "read release < /etc/alpine-release; echo $release")
    assert ran.stdout == "3.20.3\n", "the pulled image runs"
    tarball = alpine_like(tmp_path / "mini.tar.gz")
    assert lab.cli(1, "image", "import", "mini:1", tarball).stdout == "mini:1\n"
    listed = json.loads(lab.cli(1, "image", "ls", "--json").stdout)
    assert [(i["name"], i["tag"], i["sha256"]) for i in listed if i["name"] != "busybox"] == [
        ("alpine", "3.20.3", digest), ("mini", "1", hashlib.sha256(
            open(tarball, "rb").read()).hexdigest())]
    bad = lab.cli(1, "image", "import", "mini:2", "/nonexistent.tar", check=False)
    assert bad.returncode == 1 and "no file /nonexistent.tar" in bad.stderr
    assert lab.cli(1, "image", "rm", "mini:1").stdout == "mini:1\n"
    gone = lab.cli(1, "image", "rm", "mini:1", check=False)
    assert gone.returncode == 3 and "no image mini:1 on this host" in gone.stderr
    unpulled = lab.cli(1, "image", "pull", "alpine", check=False)
    assert unpulled.returncode == 1 and "name the release to pull" in unpulled.stderr
