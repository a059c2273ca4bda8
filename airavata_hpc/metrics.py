"""Prometheus metrics: request counts and latency, plus task, experiment and cluster gauges
read from the database when Prometheus scrapes, so they are true after a restart too."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import peewee
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from airavata_hpc.models import ComputeResource, Experiment, Task


class DatabaseCollector(Collector):
    """Counts by status, taken from the database at scrape time."""

    def __init__(self, extra: Callable[[], Iterator[GaugeMetricFamily]] | None = None) -> None:
        self.extra = extra

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tasks = GaugeMetricFamily("airavata_tasks", "Tasks by status", labels=["status"])
        for status, count in (
            Task.select(Task.status, peewee.fn.COUNT(Task.id)).group_by(Task.status).tuples()
        ):
            tasks.add_metric([status], count)
        yield tasks

        experiments = GaugeMetricFamily(
            "airavata_experiments", "Experiments by status", labels=["status"]
        )
        for status, count in (
            Experiment.select(Experiment.status, peewee.fn.COUNT(Experiment.id))
            .group_by(Experiment.status)
            .tuples()
        ):
            experiments.add_metric([status], count)
        yield experiments

        clusters = GaugeMetricFamily(
            "airavata_cluster_healthy",
            "1 when the cluster answered its last check",
            labels=["cluster", "type"],
        )
        for resource in ComputeResource.select():
            clusters.add_metric(
                [resource.name, resource.type], 1.0 if resource.health == "healthy" else 0.0
            )
        yield clusters
        if self.extra:
            yield from self.extra()


class Metrics:
    """One registry per server, so tests can run several servers in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "airavata_http_requests",
            "HTTP requests served",
            ["handler", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "airavata_http_request_seconds",
            "HTTP request latency",
            ["handler"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.scheduler_commands = Counter(
            "airavata_scheduler_commands",
            "Batch-system commands issued",
            ["cluster", "kind"],
            registry=self.registry,
        )
        self.task_transitions = Counter(
            "airavata_task_transitions",
            "Task status changes made by the engine",
            ["cluster", "status"],
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector())

    def render(self) -> bytes:
        return generate_latest(self.registry)
