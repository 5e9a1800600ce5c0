"""Hypothesis strategies that build valid events of every catalogue type."""

from hypothesis import strategies as st

from cantainer import events as ev

names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
service_names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,20}\Z")
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
    ev.ClusterCreated: st.builds(ev.ClusterCreated, default_network=cidrs,
                                 checkpoint_every=st.one_of(st.none(), st.just(0),
                                                            st.integers(100, 10**7))),
    ev.NodeJoined: st.builds(ev.NodeJoined, name=names, address=ipv4,
                             dqlite_address=st.builds(lambda a, p: f"{a}:{p}", ipv4, ports)),
    ev.NodeLeft: st.builds(ev.NodeLeft, name=names),
    ev.NodeSuspected: st.builds(ev.NodeSuspected, name=names),
    ev.NodeRecovered: st.builds(ev.NodeRecovered, name=names),
    ev.NodeDown: st.builds(ev.NodeDown, name=names),
    ev.LeaderElected: st.builds(ev.LeaderElected, name=names),
    ev.NetworkCreated: st.builds(ev.NetworkCreated, name=names, cidr=cidrs,
                                 internal=st.booleans()),
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
        cpus=st.none() | st.floats(0.01, 1024, allow_nan=False),
        workdir=st.none() | st.sampled_from(["/", "/srv/app"]),
        user=st.none() | st.sampled_from(["0", "1000", "1000:1000"]),
        entrypoint=st.none() | st.lists(strings, min_size=1, max_size=3).map(tuple),
        cap_add=st.lists(st.sampled_from(["NET_ADMIN", "SYS_TIME", "ALL"]),
                         max_size=2).map(tuple),
        cap_drop=st.lists(st.sampled_from(["NET_RAW", "ALL"]), max_size=2).map(tuple),
        volumes=st.lists(st.sampled_from(["data:/data", "/srv:/srv:ro", "v1:/x:rw"]),
                         max_size=2, unique=True).map(tuple),
        tmpfs=st.lists(st.sampled_from(["/tmp", "/run"]), max_size=2, unique=True).map(tuple),
        read_only=st.booleans(),
        ports=st.lists(st.sampled_from(["8080:80", "192.0.2.1:53:53/udp", "443:8443/tcp"]),
                       max_size=2, unique=True).map(tuple),
        init=st.booleans(),
        restart=st.sampled_from(["no", "on-failure", "on-failure:3", "always",
                                 "unless-stopped"])),
    ev.ContainerStarted: st.builds(ev.ContainerStarted, container=container_ids,
                                   pid=st.integers(1, 1 << 22)),
    ev.ContainerStopRequested: st.builds(ev.ContainerStopRequested, container=container_ids,
                                         timeout=st.integers(0, 3600)),
    ev.ContainerStartRequested: st.builds(ev.ContainerStartRequested, container=container_ids,
                                          policy=st.booleans()),
    ev.ContainerExited: st.builds(ev.ContainerExited, container=container_ids,
                                  exit_code=st.integers(0, 255)),
    ev.ContainerRemoved: st.builds(ev.ContainerRemoved, container=container_ids),
    ev.ServiceCreated: st.builds(
        ev.ServiceCreated, name=service_names, network=st.one_of(names, cidrs),
        replicas=st.integers(0, 1000),
        image=st.sampled_from(["busybox", "alpine:3.20"]),
        command=st.lists(strings, max_size=3).map(tuple),
        ports=st.lists(st.sampled_from(["8080:80", "53:53/udp"]), max_size=2,
                       unique=True).map(tuple),
        restart=st.sampled_from(["no", "always", "on-failure:2"]),
        constraints=st.lists(st.builds(lambda op, n: f"node.name{op}{n}",
                                       st.sampled_from(["==", "!="]), names),
                             max_size=2).map(tuple)),
    ev.CheckpointTaken: st.builds(ev.CheckpointTaken, seq=st.integers(1, 1 << 40),
                                  digest=st.from_regex(r"\A[0-9a-f]{64}\Z")),
    ev.SegmentArchived: st.builds(lambda first, n, digest: ev.SegmentArchived(
        first=first, last=first + n, digest=digest), st.integers(1, 1 << 40),
        st.integers(0, 10_000), st.from_regex(r"\A[0-9a-f]{64}\Z")),
    ev.ImageStored: st.builds(ev.ImageStored, host=names,
                              image=st.sampled_from(["alpine:3.20", "app:1"]),
                              digest=st.from_regex(r"\A[0-9a-f]{64}\Z"),
                              size=st.integers(0, 1 << 40),
                              kind=st.sampled_from(["rootfs", "image"])),
    ev.ImageDeleted: st.builds(ev.ImageDeleted, host=names,
                               image=st.sampled_from(["alpine:3.20", "app:1"])),
    ev.ServiceScaled: st.builds(ev.ServiceScaled, name=service_names,
                                replicas=st.integers(0, 1000)),
    ev.ServiceRemoved: st.builds(ev.ServiceRemoved, name=service_names),
}

assert set(BY_TYPE) == set(ev.CATALOGUE.values()), "a catalogue type has no strategy"

any_event = st.one_of(*BY_TYPE.values())


# -- histories: event sequences that keep reaching live containers -------------------

HOSTS = ("h1", "h2", "h3")
_SUBNETS = ("198.18.0.0/29", "198.18.0.8/29", "198.18.0.0/28", "198.18.1.0/28")
_ACTIONS = (["create"] * 6 + ["start"] * 3 + ["exit"] * 2 + ["stop"] + ["remove"] * 2
            + ["network"] * 2 + ["network_rm"] + ["suspect", "recover", "leave", "join", "lead"]
            + ["garbage", "crowd"] + ["service"] * 2 + ["scale", "service_rm", "down"])


def _fresh_id(draw, made: list[str]) -> str:
    """A new container id; sometimes one that shares its first 12 digits with an
    earlier one (which log order must reject while that one lives)."""
    if made and draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(made))[:12] + f"{len(made):04x}"
    return f"{len(made) + 1:012x}"


@st.composite
def histories(draw, min_steps: int = 1, max_steps: int = 80) -> list:
    """A list of events after ``NodeJoined`` of h1..h3: mostly container life cycles on
    a few small, overlapping subnets, whose events name containers created before
    (live ones more often than not), mixed with network, membership and random events."""
    made: list[str] = []
    out: list = []
    for _ in range(draw(st.integers(min_steps, max_steps))):
        action = draw(st.sampled_from(_ACTIONS))
        if action in ("start", "exit", "stop", "remove") and made:
            cid = draw(st.sampled_from(made[-6:] if draw(st.booleans()) else made))
            out.append({
                "start": lambda: ev.ContainerStarted(container=cid, pid=draw(st.integers(1, 99))),
                "exit": lambda: ev.ContainerExited(container=cid,
                                                   exit_code=draw(st.integers(0, 255))),
                "stop": lambda: ev.ContainerStopRequested(container=cid,
                                                          timeout=draw(st.integers(0, 30))),
                "remove": lambda: ev.ContainerRemoved(container=cid),
            }[action]())
        elif action in ("create", "start", "exit", "stop", "remove"):
            cid = _fresh_id(draw, made)
            made.append(cid)
            out.append(ev.ContainerCreated(
                container=cid, name=draw(st.sampled_from("abcdefgh")),
                host=draw(st.sampled_from(HOSTS + ("h4",))),
                network=draw(st.sampled_from(_SUBNETS + ("n1", "n2", "default")))))
        elif action == "crowd":  # enough containers at once to fill a /29
            network = draw(st.sampled_from(_SUBNETS[:2]))
            for _ in range(draw(st.integers(3, 7))):
                cid = _fresh_id(draw, made)
                made.append(cid)
                out.append(ev.ContainerCreated(container=cid, name=f"crowd{len(made)}",
                                               host=draw(st.sampled_from(HOSTS)),
                                               network=network))
        elif action == "network":
            out.append(ev.NetworkCreated(name=draw(st.sampled_from(["n1", "n2", "n3"])),
                                         cidr=draw(st.sampled_from(_SUBNETS))))
        elif action == "network_rm":
            out.append(ev.NetworkRemoved(name=draw(st.sampled_from(
                ["n1", "n2", "n3", "default", "198.18.0.0-29", "198.18.1.0-28"]))))
        elif action == "garbage":
            out.append(draw(any_event))
        elif action == "service":  # replicas placed by log order, as containers
            out.append(ev.ServiceCreated(
                name=draw(st.sampled_from(["s1", "s2", "a"])),
                network=draw(st.sampled_from(_SUBNETS + ("n1", "default"))),
                replicas=draw(st.integers(0, 5)),
                constraints=draw(st.sampled_from([(), ("node.name!=h1",),
                                                  ("node.name==h2",)]))))
        elif action == "scale":
            out.append(ev.ServiceScaled(name=draw(st.sampled_from(["s1", "s2"])),
                                        replicas=draw(st.integers(0, 6))))
        elif action == "service_rm":
            out.append(ev.ServiceRemoved(name=draw(st.sampled_from(["s1", "s2"]))))
        else:
            name = draw(st.sampled_from(HOSTS + ("h4",)))
            i = HOSTS.index(name) + 1 if name in HOSTS else 4
            out.append({"suspect": lambda: ev.NodeSuspected(name=name),
                        "down": lambda: ev.NodeDown(name=name),
                        "recover": lambda: ev.NodeRecovered(name=name),
                        "leave": lambda: ev.NodeLeft(name=name),
                        "lead": lambda: ev.LeaderElected(name=name),
                        "join": lambda: ev.NodeJoined(name=name, address=f"192.0.2.{i}",
                                                      dqlite_address=f"192.0.2.{i}:9000"),
                        }[action]())
    return out


def joined_hosts() -> list:
    return [ev.NodeJoined(name=h, address=f"192.0.2.{i}", dqlite_address=f"192.0.2.{i}:9000")
            for i, h in enumerate(HOSTS, 1)]


# The default network overlaps two of the subnets above: log order decides which wins.
CREATED = ev.ClusterCreated(default_network="198.18.0.0/29")


def records(events: list) -> list:
    """``Recorded`` log rows for events, from seq 1, after ClusterCreated and NodeJoined
    of h1..h3."""
    return [ev.Recorded(seq, f"id{seq}", e.type_name(), e.VERSION, "t", float(seq), e)
            for seq, e in enumerate([CREATED, *joined_hosts(), *events], 1)]
