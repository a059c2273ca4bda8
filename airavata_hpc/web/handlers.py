"""REST handlers: each parses its request, calls the module that owns the rule, and writes
the spec's body. Paths follow the spec, served under ``/api/v1``."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from airavata_hpc import experiments, reports, spec, tasks
from airavata_hpc.errors import ApiError, format_time
from airavata_hpc.health import HEALTHY, UNHEALTHY, database_health, roll_up
from airavata_hpc.web.base import ApiHandler

LIST_ARGS = ("project_id", "owner_id", "status", "limit", "offset")
SEARCH_ARGS = LIST_ARGS + (
    "parameter_filter",
    "created_after",
    "created_before",
    "tags",
    "sort_by",
    "order",
)


class ExperimentsHandler(ApiHandler):
    def get(self) -> None:
        self.send_json(experiments.list_experiments(self.principal, self.query_args(*LIST_ARGS)))

    def post(self) -> None:
        experiment = experiments.create(self.principal, self.json_body())
        self.set_header("Location", f"/api/v1/experiments/{experiment.id}")
        self.send_json(experiments.to_json(experiment), status=201)


class SearchHandler(ApiHandler):
    def get(self) -> None:
        self.send_json(experiments.search(self.principal, self.query_args(*SEARCH_ARGS)))


class _EngineNotifier(ApiHandler):
    def _notify(self, experiment_id: str) -> None:
        engine = self.context.engine
        if engine is not None:
            engine.experiment_changed(experiment_id)


class ExperimentHandler(_EngineNotifier):
    def get(self, experiment_id: str) -> None:
        self.send_json(experiments.to_json(experiments.get(self.principal, experiment_id)))

    def put(self, experiment_id: str) -> None:
        experiment = experiments.update(self.principal, experiment_id, self.json_body())
        self._notify(experiment.id)
        self.send_json(experiments.to_json(experiment))

    def delete(self, experiment_id: str) -> None:
        experiments.delete(self.principal, experiment_id)
        self.set_status(204)
        self.finish()


class SubmitHandler(_EngineNotifier):
    def post(self, experiment_id: str) -> None:
        experiment = experiments.submit(self.principal, experiment_id)
        self._notify(experiment.id)
        self.send_json(experiments.to_json(experiment))


class CancelHandler(_EngineNotifier):
    def post(self, experiment_id: str) -> None:
        experiment = experiments.cancel(self.principal, experiment_id)
        self._notify(experiment.id)
        self.send_json(experiments.to_json(experiment))


class DeriveHandler(ApiHandler):
    def post(self, experiment_id: str) -> None:
        self.send_json(
            experiments.derive(self.principal, experiment_id, self.json_body()), status=201
        )


class SummaryHandler(ApiHandler):
    def get(self, experiment_id: str) -> None:
        self.send_json(reports.summary(self.principal, experiment_id))


class ProgressHandler(ApiHandler):
    def get(self, experiment_id: str) -> None:
        self.send_json(reports.progress(self.principal, experiment_id))


class TimelineHandler(ApiHandler):
    def get(self, experiment_id: str) -> None:
        self.send_json(reports.timeline(self.principal, experiment_id))


class FailedTasksHandler(ApiHandler):
    def get(self, experiment_id: str) -> None:
        self.send_json(reports.failed_tasks(self.principal, experiment_id))


class ExperimentTasksHandler(ApiHandler):
    def get(self, experiment_id: str) -> None:
        self.send_json(
            tasks.list_tasks(
                self.principal, experiment_id, self.query_args("status", "limit", "offset")
            )
        )


class TaskHandler(ApiHandler):
    def get(self, task_id: str) -> None:
        self.send_json(tasks.get_json(self.principal, task_id))


class TaskProgressHandler(ApiHandler):
    def get(self, task_id: str) -> None:
        self.send_json(reports.task_progress(self.principal, task_id))


class AggregateHandler(ApiHandler):
    def get(self) -> None:
        self.send_json(
            reports.aggregate(
                self.principal, self.query_args("experiment_id", "group_by", "limit", "offset")
            )
        )


class HealthHandler(ApiHandler):
    """Liveness and readiness: 503 when the database does not answer."""

    requires_auth = False

    def get(self) -> None:
        database = database_health()
        healthy = database["status"] != UNHEALTHY
        self.send_json(
            {
                "status": HEALTHY if healthy else UNHEALTHY,
                "timestamp": format_time(datetime.now(UTC)),
                "version": self.context.version,
            },
            status=200 if healthy else 503,
        )


class DetailedHealthHandler(ApiHandler):
    requires_auth = False

    def get(self) -> None:
        components = {"database": database_health()}
        engine = self.context.engine
        if engine is not None:
            components.update(engine.health())
        else:
            components["scheduler_daemon"] = {
                "status": "degraded",
                "details": {"reason": "execution engine not running"},
            }
        self.send_json(
            {
                "status": roll_up(components),
                "timestamp": format_time(datetime.now(UTC)),
                "version": self.context.version,
                "components": components,
                "uptime_sec": round(time.time() - self.context.started_at, 1),
            }
        )


class MetricsHandler(ApiHandler):
    requires_auth = False

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.context.metrics.render())


class WorkerBinaryHandler(ApiHandler):
    """The spec's worker download. This service runs each task as a batch job and deploys no
    worker program, so there is never a binary: the spec's 404."""

    requires_auth = False

    def get(self) -> None:
        raise ApiError(
            404,
            "not_found",
            "this service runs tasks as batch jobs through the clusters' schedulers "
            "and has no worker binary to download",
        )


class OpenApiHandler(ApiHandler):
    requires_auth = False

    def get(self) -> None:
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        self.finish(spec.spec_text())
