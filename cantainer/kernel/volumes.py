"""Named volumes: this host's, in ``DATA_DIR/volumes/NAME/``, kept until removed.

    NAME/_data        what containers see where they mount it (``-v NAME:/path``)
    NAME/volume.json  {"name", "created"}

A volume is made by ``volume create`` or by the first container that names it
(as Docker does).  Which containers use one is the log's business: the API
refuses ``volume rm`` while a container of this host names it.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from cantainer.errors import Invalid, NotFound


class VolumeStore:
    def __init__(self, data_dir: str) -> None:
        self.root = os.path.join(data_dir, "volumes")

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def data(self, name: str) -> str:
        """The volume's directory, made (with its record) if it is new."""
        path = os.path.join(self._dir(name), "_data")
        if not os.path.isdir(path):
            self.create(name)
        return path

    def create(self, name: str) -> dict:
        if os.path.exists(os.path.join(self._dir(name), "volume.json")):
            return self.inspect(name)
        os.makedirs(os.path.join(self._dir(name), "_data"), mode=0o755, exist_ok=True)
        meta = {"name": name, "created": time.time()}
        tmp = os.path.join(self._dir(name), "volume.json.tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, os.path.join(self._dir(name), "volume.json"))
        return self.inspect(name)

    def inspect(self, name: str) -> dict:
        try:
            with open(os.path.join(self._dir(name), "volume.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            raise NotFound(f"no volume {name!r} on this host") from None
        return {**meta, "mountpoint": os.path.join(self._dir(name), "_data")}

    def list(self) -> list[dict]:
        if not os.path.isdir(self.root):
            return []
        found = []
        for name in sorted(os.listdir(self.root)):
            try:
                found.append(self.inspect(name))
            except NotFound:
                continue  # half made: not a volume (yet)
        return found

    def remove(self, name: str) -> str:
        self.inspect(name)  # NotFound if there is none
        if os.path.realpath(self._dir(name)) == os.path.realpath(self.root):
            raise Invalid(f"{name!r} is not a volume name")
        shutil.rmtree(self._dir(name))
        return name
