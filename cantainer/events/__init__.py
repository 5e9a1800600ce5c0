"""Events and the replicated log.

    _catalogue.py   the event classes (frozen attrs, past tense, versioned)
    _validate.py    field validators shared by the catalogue
    _codec.py       msgpack encoding; decoding that never raises
    _log.py         EventLog: append/read/head over dqlite, idempotent ids, retries
    _dqlite.py      ctypes binding to libdqlite: the embedded node
    _raft.py        this host's seat in the Raft group: join, roles, hand-over

Import from here, not from the private modules.
"""

from cantainer.events._catalogue import (
    CATALOGUE,
    ContainerCreated,
    ContainerExited,
    ContainerRemoved,
    ContainerStarted,
    ContainerStopRequested,
    Event,
    NetworkCreated,
    NetworkRemoved,
    NodeJoined,
    NodeLeft,
    NodeRecovered,
    NodeSuspected,
)
from cantainer.events._codec import (
    MAX_PAYLOAD,
    Recorded,
    UnknownEvent,
    decode,
    decode_fields,
    encode,
    from_data,
    to_data,
)
from cantainer.events._log import EventLog, new_event_id
from cantainer.events._validate import SHORT_ID, parse_cidr
from cantainer.events._raft import RaftMember, plan_roles

__all__ = [
    "CATALOGUE", "MAX_PAYLOAD", "SHORT_ID", "EventLog", "RaftMember", "new_event_id", "plan_roles",
    "ContainerCreated", "ContainerExited", "ContainerRemoved", "ContainerStarted",
    "ContainerStopRequested", "Event", "NetworkCreated", "NetworkRemoved", "NodeJoined", "NodeLeft",
    "NodeRecovered", "NodeSuspected", "Recorded", "UnknownEvent", "decode", "decode_fields", "encode", "parse_cidr",
    "from_data", "to_data",
]
