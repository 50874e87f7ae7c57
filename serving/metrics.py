"""Prometheus metrics of the service (one registry per app, so tests and several apps in one
process never share counters). No label value ever carries message text or a key."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from domain import LABELS
from serving.follower import ServedModel

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "sentiloop_request_duration_seconds",
            "Request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "sentiloop_requests_total",
            "Requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.errors = Counter(
            "sentiloop_request_errors_total",
            "Requests answered with a 4xx or 5xx, by route.",
            ["route"],
            registry=r,
        )
        self.predictions = Counter(
            "sentiloop_predictions_total", "Messages classified, by label.", ["label"], registry=r
        )
        self.escalations = Counter(
            "sentiloop_escalations_total", "Conversations routed to the senior queue.", registry=r
        )
        self.version = Gauge(
            "sentiloop_model_version", "Model version in service (0: none yet).", registry=r
        )
        self.target_version = Gauge(
            "sentiloop_model_target_version",
            "Production version named by the registry (0: none); differs from "
            "sentiloop_model_version while a reload is under way or has failed.",
            registry=r,
        )
        self.reloads = Counter(
            "sentiloop_model_reloads_total", "Versions put in service.", registry=r
        )
        self.reload_failures = Counter(
            "sentiloop_model_reload_failures_total",
            "Versions refused (verification, loading or self-check failed).",
            registry=r,
        )
        self.batch_size = Histogram(
            "sentiloop_batch_size",
            "Messages scored together in one model call.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.shadow_messages = Counter(
            "sentiloop_shadow_messages_total",
            "Messages also scored by the candidate version.",
            registry=r,
        )
        self.shadow_dropped = Counter(
            "sentiloop_shadow_dropped_total",
            "Messages sampled for shadow scoring but dropped (its queue was full).",
            registry=r,
        )
        for label in LABELS:
            self.predictions.labels(label)
        self.version.set(0)
        self.target_version.set(0)

    # the follower's events

    def reloaded(self, model: ServedModel) -> None:
        self.reloads.inc()
        self.version.set(model.version)

    def reload_failed(self, version: int) -> None:
        self.reload_failures.inc()
