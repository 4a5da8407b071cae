"""Prometheus metrics of the agent, on their own registry (one per agent, so tests can run several).

The class implements the small observer interfaces of cloud_link (outbox, session, commands) and the
devices layer, so those layers count things without importing prometheus wiring of ours.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cloud_link.events import EventClass
from cloud_link.outbox import OutboxStats

RATE_WINDOW_S = 10.0


class _OutboxCollector(Collector):
    """Reads depth and age from the database at scrape time (two indexed queries)."""

    def __init__(self, stats: Callable[[], OutboxStats]) -> None:
        self._stats = stats

    def collect(self) -> list[GaugeMetricFamily]:
        s = self._stats()
        age = 0.0 if s.oldest_ms is None else max(0.0, time.time() - s.oldest_ms / 1000.0)
        return [
            GaugeMetricFamily("edge_outbox_depth", "Events waiting for the cloud's acknowledgement.", s.events),
            GaugeMetricFamily("edge_outbox_bytes", "Bytes the outbox holds (accounted size).", s.bytes),
            GaugeMetricFamily("edge_outbox_oldest_age_seconds", "Age of the oldest unsent event.", age),
            GaugeMetricFamily("edge_event_last_seq", "Last event sequence number handed out.", s.last_seq),
        ]


class _LabelCollector(Collector):
    """Tag update progress and base-station link health, read at scrape time."""

    def __init__(self, labels: Any) -> None:
        self._labels = labels

    def collect(self) -> list[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("edge_tag_jobs", "Tag update jobs by state.", labels=["state"])
        for state, count in self._labels.progress().items():
            jobs.add_metric([state], count)
        stats = self._labels.stats
        sent = GaugeMetricFamily(
            "edge_tag_transfers", "Tag picture transfers since start, by outcome.", labels=["outcome"]
        )
        for outcome in ("sent", "confirmed", "retried", "failed", "unchanged", "wrong_hash"):
            sent.add_metric([outcome], getattr(stats, outcome))
        link = GaugeMetricFamily(
            "edge_base_station_link", "Base-station link counters since start.", labels=["station", "counter"]
        )
        up = GaugeMetricFamily(
            "edge_base_station_connected", "1 while the base station's link is up.", labels=["station"]
        )
        for name, client in self._labels.stations.items():
            up.add_metric([name], 1 if client.connected else 0)
            if not hasattr(client, "link"):
                continue  # Wi-Fi labels: no serial link to report
            s, d = client.link.stats, client.link.decoder.stats
            for counter, value in (
                ("frames_sent", s.frames_sent),
                ("frames_received", s.frames_received),
                ("retransmits", s.retransmits),
                ("bytes_sent", s.bytes_sent),
                ("bytes_received", s.bytes_received),
                ("peer_resets", s.peer_resets),
                ("crc_errors", d.crc_errors),
                ("bad_frames", d.bad_frames),
                ("overruns", d.overruns),
                ("reconnects", client.stats.reconnects),
                ("bad_messages", client.stats.bad_messages),
            ):
                link.add_metric([name, counter], value)
        return [jobs, sent, link, up]


# Lock-bus counters exported per bus: the line's health (docs/lock-boards.md). KerongBus.stats field names.
LOCK_BUS_COUNTERS = (
    "requests", "frames", "timeouts", "retries", "checksum_errors", "bad_frames", "garbage_bytes",
    "wrong_address", "stale_replies", "unlocks_sent", "unlocks_unanswered", "reconnects", "open_failures",
)


class _LockBusCollector(Collector):
    """RS485 lock-bus counters and link state, read at scrape time."""

    def __init__(self, buses: Mapping[str, Any]) -> None:
        self._buses = buses

    def collect(self) -> list[GaugeMetricFamily]:
        counters = GaugeMetricFamily("edge_lock_bus", "Lock-bus counters since start.", labels=["bus", "counter"])
        up = GaugeMetricFamily("edge_lock_bus_connected", "1 while the lock bus's serial port is open.", labels=["bus"])
        for name, bus in self._buses.items():
            up.add_metric([name], 1 if bus.connected else 0)
            for counter in LOCK_BUS_COUNTERS:
                counters.add_metric([name, counter], getattr(bus.stats, counter))
        return [counters, up]


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.published = Counter("edge_events_published", "Events acknowledged by the cloud broker.", registry=r)
        self.publish_rate = Gauge(
            "edge_publish_rate_eps", f"Events acknowledged per second over the last {RATE_WINDOW_S:.0f} s.", registry=r
        )
        self.reconnects = Counter("edge_cloud_reconnects", "Cloud connections made after the first.", registry=r)
        self.cloud_connected = Gauge("edge_cloud_connected", "1 while the cloud link is up.", registry=r)
        self.dropped = Counter(
            "edge_events_dropped", "Events dropped by the full-outbox policy.", ["cls"], registry=r
        )
        self.refused = Counter(
            "edge_events_refused", "Events refused because the outbox is full.", ["cls"], registry=r
        )
        self.full_alarm_active = Gauge("edge_outbox_full_alarm", "1 while the outbox-full alarm is raised.", registry=r)
        self.bad_inputs = Counter(
            "edge_bad_inputs", "Inputs rejected as malformed or invalid.", ["source", "reason"], registry=r
        )
        self._acks: deque[tuple[float, int]] = deque()
        self.publish_rate.set_function(self._rate)

    def watch_outbox(self, stats: Callable[[], OutboxStats]) -> None:
        self.registry.register(_OutboxCollector(stats))

    def watch_clock(self, trusted: Callable[[], bool], offset_s: Callable[[], float]) -> None:
        """The wall clock's state (edge_agent.services.agent_clock): 0 while expiries wait for it."""
        Gauge("edge_clock_trusted", "1 while the wall clock is trusted; 0 while it is behind, ahead or unconfirmed "
              "(pickup holds do not expire then).", registry=self.registry).set_function(lambda: float(trusted()))
        Gauge("edge_clock_offset_seconds", "The wall clock minus the agent's best estimate of the time (0 while "
              "trusted).", registry=self.registry).set_function(offset_s)

    def watch_lock_buses(self, buses: Mapping[str, Any]) -> None:
        self.registry.register(_LockBusCollector(buses))

    def watch_labels(self, labels: Any) -> None:
        """`labels` is a devices.labels.updates.LabelService (typed loosely: metrics stay import-light)."""
        self.registry.register(_LabelCollector(labels))

    # OutboxObserver
    def events_dropped(self, cls: EventClass, count: int) -> None:
        self.dropped.labels(cls=cls.value).inc(count)

    def event_refused(self, cls: EventClass) -> None:
        self.refused.labels(cls=cls.value).inc()

    def full_alarm(self, active: bool) -> None:
        self.full_alarm_active.set(1 if active else 0)

    # LinkObserver
    def connected(self, up: bool) -> None:
        self.cloud_connected.set(1 if up else 0)

    def reconnected(self) -> None:
        self.reconnects.inc()

    def acknowledged(self, count: int) -> None:
        self.published.inc(count)
        now = time.monotonic()
        self._acks.append((now, count))
        while self._acks and self._acks[0][0] < now - RATE_WINDOW_S:
            self._acks.popleft()

    def _rate(self) -> float:
        now = time.monotonic()
        while self._acks and self._acks[0][0] < now - RATE_WINDOW_S:
            self._acks.popleft()
        return sum(n for _, n in self._acks) / RATE_WINDOW_S

    # BadInputObserver
    def bad_input(self, source: str, reason: str) -> None:
        self.bad_inputs.labels(source=source, reason=reason).inc()
