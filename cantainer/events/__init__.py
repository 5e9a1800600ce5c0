"""Events: the catalogue of facts the cluster records, and their encoding.

    catalogue.py   the event classes (frozen attrs, past tense, versioned)
    validate.py    field validators shared by the catalogue
    codec.py       msgpack encoding; decoding that never raises
    log.py         EventLog: append/read/head over dqlite, idempotent ids, retries
    engine.py      ctypes binding to libdqlite: the embedded node
    raft.py        this host's seat in the Raft group: join, roles, hand-over

This package exports the catalogue and the codec, which everything uses; the
log, the engine and Raft (dqlite's client and library) are imported where
they are used: ``from cantainer.events.log import EventLog``.
"""

from cantainer.events.catalogue import (
    CATALOGUE,
    CheckpointTaken,
    ClusterCreated,
    ContainerCreated,
    ContainerExited,
    ContainerRemoved,
    ContainerStarted,
    ContainerStartRequested,
    ContainerStopRequested,
    Event,
    ImageDeleted,
    ImageStored,
    NetworkCreated,
    NetworkRemoved,
    NodeDown,
    NodeJoined,
    NodeLeft,
    NodeRecovered,
    LeaderElected,
    NodeSuspected,
    ServiceCreated,
    ServiceRemoved,
    SegmentArchived,
    ServiceScaled,
)
from cantainer.events.codec import (
    MAX_PAYLOAD,
    BadStream,
    Recorded,
    UnknownEvent,
    decode,
    decode_fields,
    encode,
    from_data,
    new_event_id,
    pack_rows,
    decode_rows,
    row_of,
    to_data,
    unpack_records,
    unpack_rows,
)
from cantainer.events.validate import parse_cidr

__all__ = [
    "CATALOGUE", "CheckpointTaken", "MAX_PAYLOAD", "ClusterCreated", "ContainerCreated", "ContainerExited", "ContainerRemoved",
    "ContainerStarted", "ContainerStartRequested", "ContainerStopRequested", "Event", "ImageDeleted", "ImageStored", "NetworkCreated", "NetworkRemoved",
    "LeaderElected", "NodeDown", "NodeJoined", "NodeLeft", "NodeRecovered", "NodeSuspected", "Recorded", "SegmentArchived", "ServiceCreated", "ServiceRemoved", "ServiceScaled", "UnknownEvent",
    "decode", "decode_fields", "encode", "from_data", "new_event_id", "parse_cidr", "to_data",
    "BadStream", "pack_rows", "decode_rows", "row_of", "unpack_records", "unpack_rows",
]
