"""Metrics for Prometheus (``prometheus-client``), on ``--metrics`` (default
127.0.0.1, the dqlite port + 3: off the underlay; ``none``: not served).

The values are what the daemon knows already: the event loop takes a *sample* of
them every second (``Metrics.sample``, on the loop, where the state lives) and the
exporter's thread reads the newest sample at each scrape (no lock: one reference is
swapped).  Append latency is a histogram observed by the API's appends.

    cantainer_applied_seq                  what this host's state has applied
    cantainer_convergence_lag_seconds      from the append of the newest record read from
                                           the log (its time) to its application here
    cantainer_log_read_age_seconds         since a read or append last reached a quorum
    cantainer_append_seconds               API appends, until applied here (histogram)
    cantainer_actor_mailbox{actor}         messages waiting for each kernel actor
    cantainer_actor_messages_total{actor}  messages it handled
    cantainer_actor_busy_seconds_total{actor}  time it spent on them
    cantainer_containers{state}            this host's containers by state
    cantainer_members{state}               the cluster's members by state
    cantainer_heartbeat_age_seconds{member}    since this host heard each member
    cantainer_heartbeats_refused_total     datagrams refused (forged, replayed, stale)
    cantainer_heartbeat_datagrams_sent_total{kind}   heartbeats and pokes sent
    cantainer_heartbeat_datagrams_taken_total        datagrams that passed every check
    cantainer_fenced                       1 while this host's replicas may not run
    cantainer_log_feed_relay{relay}        1 while this host follows that relay (none:
                                           it reads the leader: daemon/fanout.py)
    cantainer_log_feed_dropped_total       relays this host dropped
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.append_seconds = Histogram(
            "cantainer_append_seconds", "API appends, from the request to applied here",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=self.registry)
        self._sample: dict = {}
        self.registry.register(self)
        self._server = None

    def serve(self, host: str, port: int) -> None:
        self._server, _ = start_http_server(port, host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def sample(self, *, state, lag: float, last_read_ok: float, node: str, refs, stats,
               heard: dict[str, float], refused: int, fenced: bool,
               sent: dict[str, int] | None = None, taken: int = 0,
               feed: str | None = None, dropped: int = 0) -> None:
        """On the loop: the numbers of this moment, for the next scrapes."""
        now = time.monotonic()
        containers: dict[str, int] = {}
        for c in state.ipam.containers.values():
            if c.host == node:
                containers[c.state] = containers.get(c.state, 0) + 1
        members: dict[str, int] = {}
        for n in state.members.nodes.values():
            key = "down" if n.down else n.state
            members[key] = members.get(key, 0) + 1
        mailboxes = {}
        for name, ref in refs.items():
            try:
                mailboxes[name] = ref.actor_inbox.qsize()
            except Exception:  # noqa: BLE001 -- a restarting actor: no mailbox now
                mailboxes[name] = 0
        self._sample = {
            "lag": lag, "applied": state.applied,
            "read_age": now - last_read_ok, "mailboxes": mailboxes,
            "stats": {name: tuple(v) for name, v in stats.items()},
            "containers": containers, "members": members,
            "heard": {name: now - t for name, t in heard.items()},
            "refused": refused, "fenced": fenced, "sent": dict(sent or {}), "taken": taken,
            "feed": feed, "dropped": dropped}

    def collect(self):
        s = self._sample
        if not s:
            return
        def gauge(name, doc, value, labels=None, values=None):
            g = GaugeMetricFamily(name, doc, labels=labels)
            if labels:
                for key, v in sorted(values.items()):
                    g.add_metric([key], v)
            else:
                g.add_metric([], value)
            return g
        yield gauge("cantainer_applied_seq", "the seq this host's state has applied",
                    s["applied"])
        yield gauge("cantainer_convergence_lag_seconds",
                    "from the newest record's append to its application here", s["lag"])
        yield gauge("cantainer_log_read_age_seconds",
                    "since a read or append last reached a quorum", s["read_age"])
        yield gauge("cantainer_actor_mailbox", "messages waiting", None, ["actor"],
                    s["mailboxes"])
        handled = CounterMetricFamily("cantainer_actor_messages", "messages handled",
                                      labels=["actor"])
        busy = CounterMetricFamily("cantainer_actor_busy_seconds", "time spent on them",
                                   labels=["actor"])
        for name, (count, seconds) in sorted(s["stats"].items()):
            handled.add_metric([name], count)
            busy.add_metric([name], seconds)
        yield handled
        yield busy
        yield gauge("cantainer_containers", "this host's containers by state", None,
                    ["state"], s["containers"])
        yield gauge("cantainer_members", "members by state", None, ["state"], s["members"])
        yield gauge("cantainer_heartbeat_age_seconds", "since each member was heard", None,
                    ["member"], s["heard"])
        refused = CounterMetricFamily("cantainer_heartbeats_refused",
                                      "datagrams refused")
        refused.add_metric([], s["refused"])
        yield refused
        sent = CounterMetricFamily("cantainer_heartbeat_datagrams_sent",
                                   "heartbeats and pokes sent", labels=["kind"])
        for kind, count in sorted(s["sent"].items()):
            sent.add_metric([kind], count)
        yield sent
        taken = CounterMetricFamily("cantainer_heartbeat_datagrams_taken",
                                    "datagrams that passed every check")
        taken.add_metric([], s["taken"])
        yield taken
        yield gauge("cantainer_fenced", "1 while this host's replicas may not run",
                    1 if s["fenced"] else 0)
        yield gauge("cantainer_log_feed_relay", "1 while this host follows that relay",
                    None, ["relay"], {s["feed"]: 1} if s.get("feed") else {})
        dropped = CounterMetricFamily("cantainer_log_feed_dropped", "relays dropped")
        dropped.add_metric([], s.get("dropped", 0))
        yield dropped

    def describe(self):  # the registry asks once; collect's families are dynamic
        return []
