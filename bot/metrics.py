"""Prometheus metrics of one process, on a registry of its own (tests start many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.callbacks = Counter(
            "salesbot_callbacks_total", "Inbound platform callbacks by outcome",
            ["channel", "outcome"], registry=r,
        )
        self.events = Counter(
            "salesbot_events_total", "Inbound events processed, by kind and outcome",
            ["channel", "kind", "outcome"], registry=r,
        )
        self.event_seconds = Histogram(
            "salesbot_event_seconds", "Time to process one event", registry=r,
        )
        self.outbox_sent = Counter(
            "salesbot_outbox_sent_total", "Messages delivered", ["channel", "kind"], registry=r,
        )
        self.outbox_failed = Counter(
            "salesbot_outbox_failed_total", "Messages given up on", ["channel"], registry=r,
        )
        self.outbox_folded = Counter(
            "salesbot_outbox_folded_total", "Messages folded into a digest", registry=r,
        )
        self.outbox_depth = Gauge(
            "salesbot_outbox_depth", "Outbox rows by state", ["state"], registry=r,
        )
        self.assignments = Counter(
            "salesbot_assignments_total", "Lead offers made", ["method"], registry=r,
        )
        self.leads_queued = Gauge(
            "salesbot_leads_queued", "Leads waiting as new with no assignee", registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
