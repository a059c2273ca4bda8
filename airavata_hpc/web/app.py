"""Building the Tornado application: the route table and the shared context."""

from __future__ import annotations

import tornado.web

from airavata_hpc.web import handlers as h
from airavata_hpc.web.base import AppContext, NotFoundHandler

API = "/api/v1"
ID = r"([^/]+)"


def routes() -> list[tuple[str, type]]:
    api = [
        ("/experiments", h.ExperimentsHandler),
        ("/experiments/search", h.SearchHandler),
        (f"/experiments/{ID}", h.ExperimentHandler),
        (f"/experiments/{ID}/submit", h.SubmitHandler),
        (f"/experiments/{ID}/cancel", h.CancelHandler),
        (f"/experiments/{ID}/derive", h.DeriveHandler),
        (f"/experiments/{ID}/summary", h.SummaryHandler),
        (f"/experiments/{ID}/progress", h.ProgressHandler),
        (f"/experiments/{ID}/timeline", h.TimelineHandler),
        (f"/experiments/{ID}/failed-tasks", h.FailedTasksHandler),
        (f"/experiments/{ID}/tasks", h.ExperimentTasksHandler),
        ("/tasks/aggregate", h.AggregateHandler),
        (f"/tasks/{ID}", h.TaskHandler),
        (f"/tasks/{ID}/progress", h.TaskProgressHandler),
        ("/health", h.HealthHandler),
        ("/health/detailed", h.DetailedHealthHandler),
        ("/metrics", h.MetricsHandler),
        ("/api/worker-binary", h.WorkerBinaryHandler),
        ("/openapi.yaml", h.OpenApiHandler),
    ]
    # Probes and Prometheus expect these at the root as well.
    root = [
        ("/health", h.HealthHandler),
        ("/health/detailed", h.DetailedHealthHandler),
        ("/metrics", h.MetricsHandler),
        ("/api/worker-binary", h.WorkerBinaryHandler),
    ]
    return [(API + path, handler) for path, handler in api] + root


def make_app(context: AppContext) -> tornado.web.Application:
    table = [(path, handler, {"context": context}) for path, handler in routes()]
    return tornado.web.Application(
        table,
        default_handler_class=NotFoundHandler,
        default_handler_args={"context": context},
        compress_response=False,
        serve_traceback=False,
    )
