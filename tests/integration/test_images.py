"""Images through the daemon; pulling from a mirror served inside a lab host."""

import hashlib
import http.server
import json
import os
import threading

import pytest

from cantainer.kernel import netns
from tests.unit.test_images import alpine_like

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def mirror(tmp_path):
    """A mirror laid out like Alpine's CDN, served by HTTP inside a fresh namespace."""
    name = f"ctimg{os.getpid() % 100000}"
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

    netns.create(name)
    netns.set_link_state(name, "lo", True)
    started, servers = threading.Event(), []

    def serve():
        netns.enter(name)
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        servers.append(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler))
        started.set()
        servers[0].serve_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield name, f"http://127.0.0.1:{servers[0].server_address[1]}/alpine", digest
    finally:
        servers[0].shutdown()
        thread.join(10)
        netns.remove(name)


def test_pull_import_ls_rm(make_lab, mirror, tmp_path):
    from cantainer.kernel.images import ImageStore, pull_alpine
    ns, url, digest = mirror
    store = ImageStore(str(tmp_path / "store"))
    meta = netns.run_in(ns, lambda: pull_alpine(store, "alpine:3.20.3", url))
    assert meta["sha256"] == digest and meta["source"].startswith(url)
    assert os.readlink(os.path.join(store.rootfs("alpine:3.20.3"), "bin/sh")) == "/bin/busybox"
    with pytest.raises(Exception, match="does not match the published 0000"):
        netns.run_in(ns, lambda: pull_alpine(store, "alpine:3.20.4", url))
    with pytest.raises(Exception, match="cannot download"):
        netns.run_in(ns, lambda: pull_alpine(store, "alpine:3.19.1", url))
    assert [i["tag"] for i in store.list()] == ["3.20.3"]

    # The same through a daemon and the CLI (importing from a file on the host).
    lab = make_lab(1)
    lab.start(1)
    tarball = alpine_like(tmp_path / "mini.tar.gz")
    assert lab.cli(1, "image", "import", "mini:1", tarball).stdout == "mini:1\n"
    listed = json.loads(lab.cli(1, "image", "ls", "--json").stdout)
    assert [(i["name"], i["tag"]) for i in listed] == [("mini", "1")]
    bad = lab.cli(1, "image", "import", "mini:2", "/nonexistent.tar", check=False)
    assert bad.returncode == 1 and "no file /nonexistent.tar" in bad.stderr
    assert lab.cli(1, "image", "rm", "mini:1").stdout == "mini:1\n"
    gone = lab.cli(1, "image", "rm", "mini:1", check=False)
    assert gone.returncode == 1 and "no image mini:1 on this host" in gone.stderr
    unpulled = lab.cli(1, "image", "pull", "alpine", check=False)
    assert unpulled.returncode == 1 and "name the release to pull" in unpulled.stderr
