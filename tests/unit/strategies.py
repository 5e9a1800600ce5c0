"""Hypothesis strategies that build valid events of every catalogue type."""

from hypothesis import strategies as st

from cantainer import events as ev

names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
octet = st.integers(0, 255)
ipv4 = st.tuples(octet, octet, octet, octet).map(lambda t: ".".join(map(str, t)))
ports = st.integers(1, 65535)
container_ids = st.from_regex(r"\A[0-9a-f]{12,64}\Z")
prefixes = st.integers(8, 29)
cidrs = st.builds(
    lambda addr, p: __import__("ipaddress").IPv4Network(f"{addr}/{p}", strict=False).with_prefixlen,
    ipv4, prefixes)
strings = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                  max_size=40)

BY_TYPE = {
    ev.NodeJoined: st.builds(ev.NodeJoined, name=names, address=ipv4,
                             dqlite_address=st.builds(lambda a, p: f"{a}:{p}", ipv4, ports)),
    ev.NodeLeft: st.builds(ev.NodeLeft, name=names),
    ev.NodeSuspected: st.builds(ev.NodeSuspected, name=names),
    ev.NodeRecovered: st.builds(ev.NodeRecovered, name=names),
    ev.NetworkCreated: st.builds(ev.NetworkCreated, name=names, cidr=cidrs),
    ev.NetworkRemoved: st.builds(ev.NetworkRemoved, name=names),
    ev.ContainerCreated: st.builds(
        ev.ContainerCreated, container=container_ids, name=names, host=names,
        network=st.one_of(names, cidrs),
        image=st.sampled_from(["busybox", "alpine:3.20", "my/img:v1"]),
        command=st.lists(strings, max_size=5).map(tuple),
        env=st.lists(st.builds(lambda k, v: f"{k}={v}",
                               st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,8}\Z"), strings),
                     max_size=4).map(tuple),
        hostname=st.none() | names,
        memory=st.none() | st.integers(4 << 20, 1 << 40),
        pids_limit=st.none() | st.integers(1, 1 << 22),
        cpus=st.none() | st.floats(0.01, 1024, allow_nan=False)),
    ev.ContainerStarted: st.builds(ev.ContainerStarted, container=container_ids,
                                   pid=st.integers(1, 1 << 22)),
    ev.ContainerStopRequested: st.builds(ev.ContainerStopRequested, container=container_ids,
                                         timeout=st.integers(0, 3600)),
    ev.ContainerExited: st.builds(ev.ContainerExited, container=container_ids,
                                  exit_code=st.integers(0, 255)),
    ev.ContainerRemoved: st.builds(ev.ContainerRemoved, container=container_ids),
}

assert set(BY_TYPE) == set(ev.CATALOGUE.values()), "a catalogue type has no strategy"

any_event = st.one_of(*BY_TYPE.values())
