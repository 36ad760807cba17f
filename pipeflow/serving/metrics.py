"""The Prometheus metrics of one server process (``GET /metrics``).

Each app keeps its own :class:`~prometheus_client.CollectorRegistry`, not the global one, where a
second app in the same process (the tests) would collide on the metric names; with ``--workers N`` each worker
answers for itself, and a scrape sees one of them. The metric names and labels are the public
interface here (dashboards and alerts read them): ``pipeflow_requests`` (model, version, route,
code), ``pipeflow_errors`` (type), ``pipeflow_request_latency_seconds``, ``pipeflow_predictions``,
``pipeflow_unusual_inputs``, ``pipeflow_canary_weight``, ``pipeflow_route_unkeyed`` (requests
routed at random for want of the ``--route-by`` key) and the shadow's ``pipeflow_shadow_rows``,
``pipeflow_shadow_errors`` and ``pipeflow_shadow_dropped`` (model, version): this process's own, which Prometheus
sums over the replicas. Two gauges are the fleet's, the same on every replica (from every
replica's journal, :mod:`pipeflow.serving.fleet`): ``pipeflow_fleet_accuracy`` and
``pipeflow_fleet_labelled`` (model, version). The two moments that count are here
too: a request answered with predictions (:meth:`Metrics.answered`) and one refused
(:meth:`Metrics.refused`).

Three gauges say how loaded and how alive a replica is *now*, for autoscalers (docs/deploy/
kubernetes.md scales on them) and load balancers: ``pipeflow_requests_in_flight`` (prediction
requests received and not yet answered: body being read, queued or being scored),
``pipeflow_queue_depth`` (requests waiting in the micro-batch queues for a batch, read at scrape
time from the batchers :mod:`pipeflow.serving.app` hands to :meth:`Metrics.track`) and
``pipeflow_draining`` (1 from SIGTERM until exit, :mod:`pipeflow.serving.drain`). In-flight is the
one to scale on: it counts the work a replica has accepted, whether it waits on the model or on
the queue; queue depth above zero for long says the model itself is the bottleneck.
"""

from __future__ import annotations

from collections.abc import Callable


class Metrics:
    """Prometheus metrics of one server process."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=self.registry)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry)

        version = ("model", "version")
        self.requests = counter("pipeflow_requests", "requests answered", *version, "route", "code")
        self.errors = counter("pipeflow_errors", "requests refused or failed, by type", "type")
        self.latency = Histogram(
            "pipeflow_request_latency_seconds",
            "time to answer a prediction request",
            [*version, "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.rows = counter("pipeflow_predictions", "rows predicted", *version)
        self.unusual = counter(
            "pipeflow_unusual_inputs",
            "rows flagged as outside what the model saw in training",
            *version,
        )
        self.canary_weight = gauge("pipeflow_canary_weight", "share of traffic sent to the canary")
        self.in_flight = gauge(
            "pipeflow_requests_in_flight",
            "prediction requests received and not yet answered (reading, queued or scoring)",
        )
        self.queue_depth = gauge(
            "pipeflow_queue_depth",
            "prediction requests waiting in the micro-batch queues for a batch",
        )
        self.draining = gauge(
            "pipeflow_draining",
            "1 while this replica drains before stopping (not ready, still answering)",
        )
        self.unkeyed = counter(
            "pipeflow_route_unkeyed",
            "prediction requests without the --route-by key (routed at random)",
        )
        self.shadow_rows = counter(
            "pipeflow_shadow_rows",
            "rows the shadow version scored (audited in the shadow journal)",
            *version,
        )
        self.shadow_errors = counter(
            "pipeflow_shadow_errors", "rows the shadow version failed on", *version
        )
        self.shadow_dropped = counter(
            "pipeflow_shadow_dropped",
            "requests not scored by the shadow because its queue was full",
            *version,
        )
        self.fleet_accuracy = gauge(
            "pipeflow_fleet_accuracy",
            "live accuracy from feedback over every replica (right / labelled predictions)",
            *version,
        )
        self.fleet_labelled = gauge(
            "pipeflow_fleet_labelled", "predictions with feedback over every replica", *version
        )

    def track(self, queued: Callable[[], float], draining: Callable[[], bool]) -> None:
        """Read the queue depth and the draining state at each scrape from these callables."""
        self.queue_depth.set_function(queued)
        self.draining.set_function(lambda: float(draining()))

    def fleet(self, accuracies: dict[tuple[str, int], tuple[int, int]]) -> None:
        """The fleet's live accuracy per version: (model, version) -> (right, labelled)."""
        for (model, version), (right, labelled) in accuracies.items():
            self.fleet_accuracy.labels(model, str(version)).set(right / labelled)
            self.fleet_labelled.labels(model, str(version)).set(labelled)

    def answered(
        self, model: str, version: str, route: str, elapsed: float, rows: int, unusual: int
    ) -> None:
        """A prediction request answered (200) in ``elapsed`` seconds, ``unusual`` rows flagged."""
        self.requests.labels(model, version, route, "200").inc()
        self.latency.labels(model, version, route).observe(elapsed)
        self.rows.labels(model, version).inc(rows)
        if unusual:
            self.unusual.labels(model, version).inc(unusual)

    def refused(self, kind: str, model: str, version: str, status: int) -> None:
        """A request refused or failed with ``status``; the route is not known here: ``-``."""
        self.errors.labels(kind).inc()
        self.requests.labels(model, version, "-", str(status)).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type (``GET /metrics``)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
