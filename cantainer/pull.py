"""``image pull``: the Alpine minirootfs from its CDN (or a mirror), its published
SHA-256 checked before the tarball goes into this host's store (``kernel/images.py``)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request

from cantainer.errors import ImageError, Invalid, NotFound, Unavailable
from cantainer.kernel.images import ImageStore, file_sha256, parse_ref

ALPINE_CDN = "https://dl-cdn.alpinelinux.org/alpine"


def _fetch(url: str, dest, timeout: float = 60.0) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, dest)
    except urllib.error.HTTPError as exc:
        kind = NotFound if exc.code == 404 else Unavailable
        raise kind(f"cannot download {url}: {exc.reason}") from None
    except ValueError as exc:
        raise Invalid(f"cannot download {url}: {exc}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None


def alpine_urls(version: str, mirror: str | None, arch: str) -> tuple[str, str]:
    if not re.match(r"^\d+\.\d+\.\d+$", version):
        raise ImageError(f"alpine:{version}: give a full release version, e.g. alpine:3.20.3")
    major_minor = ".".join(version.split(".")[:2])
    base = (mirror or ALPINE_CDN).rstrip("/")
    url = f"{base}/v{major_minor}/releases/{arch}/alpine-minirootfs-{version}-{arch}.tar.gz"
    return url, url + ".sha256"


def pull_alpine(store: ImageStore, ref: str, mirror: str | None = None) -> dict:
    """Download the Alpine minirootfs, check its published SHA-256, import it."""
    name, tag = parse_ref(ref)
    if name != "alpine":
        raise ImageError(f"only alpine images can be pulled (got {name!r}); "
                         "use 'cantainer image import' for others")
    if tag == "latest":
        raise ImageError("name the release to pull, e.g. alpine:3.20.3")
    arch = os.uname().machine
    url, sha_url = alpine_urls(tag, mirror, arch)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = os.path.join(tmp, "rootfs.tar.gz")
        with open(tarball, "wb") as f:
            _fetch(url, f)
        sums = os.path.join(tmp, "sha256")
        with open(sums, "wb") as f:
            _fetch(sha_url, f)
        with open(sums, errors="replace") as f:
            published = f.read().split()
        actual = file_sha256(tarball)
        if not published or published[0].lower() != actual:
            raise ImageError(f"{url}: SHA-256 {actual} does not match the published "
                             f"{published[0] if published else '(empty)'}")
        return store.import_tarball(ref, tarball, source=url, sha256=actual)
