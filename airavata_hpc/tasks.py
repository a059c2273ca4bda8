"""Tasks as gateways see them: the ``Task`` body, listing an experiment's tasks, one task.

The spec defines ``Task`` but no path returning it; this service adds
``GET /experiments/{id}/tasks`` and ``GET /tasks/{id}`` (see the project's copy of the spec).
``worker_assignment_history`` is the task's attempts, one per submission to a cluster.
"""

from __future__ import annotations

from typing import Any

from airavata_hpc.auth import Principal
from airavata_hpc.errors import bad_request, format_time, not_found
from airavata_hpc.experiments import get as get_experiment
from airavata_hpc.experiments import parse_paging
from airavata_hpc.models import Experiment, Task, TaskAttempt
from airavata_hpc.states import TaskStatus


def attempt_json(attempt: TaskAttempt) -> dict[str, Any]:
    body = {
        "attempt": attempt.number,
        "cluster": attempt.cluster,
        "native_job_id": attempt.native_job_id,
        "job_name": attempt.job_name,
        "state": attempt.state,
        "host": attempt.host,
        "exit_code": attempt.exit_code,
        "error": attempt.error,
        "submitted_at": format_time(attempt.submitted_at),
        "started_at": format_time(attempt.started_at),
        "completed_at": format_time(attempt.completed_at),
    }
    return {key: value for key, value in body.items() if value is not None}


def worker_id(attempt: TaskAttempt | None) -> str | None:
    """How a worker is named in this service: ``cluster/native job id``."""
    if attempt is None or attempt.native_job_id is None:
        return None
    return f"{attempt.cluster}/{attempt.native_job_id}"


def to_json(task: Task, attempts: list[TaskAttempt], values: dict[str, str]) -> dict[str, Any]:
    """The spec's ``Task`` body (plus ``exit_code``); unset optional fields are left out."""
    latest = attempts[-1] if attempts else None
    body: dict[str, Any] = {
        "id": task.id,
        "experiment_id": task.experiment_id,
        "name": task.name,
        "command": task.command,
        "status": task.status,
        "retry_count": task.retry_count,
        "max_retries": task.max_retries,
        "metadata": {
            **(task.metadata or {}),
            "parameter_set_id": task.parameter_set_id,
            "parameters": values,
        },
        "worker_assignment_history": [attempt_json(attempt) for attempt in attempts],
        "created_at": format_time(task.created_at),
        "updated_at": format_time(task.updated_at),
    }
    optional = {
        "output_path": task.output_path,
        "assigned_worker_id": worker_id(latest),
        "assigned_at": format_time(task.assigned_at),
        "started_at": format_time(task.started_at),
        "completed_at": format_time(task.completed_at),
        "error_message": task.error_message,
        "exit_code": task.exit_code,
        "result_summary": task.result_summary,
        "execution_metrics": task.execution_metrics,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def _attempts_by_task(task_ids: list[str]) -> dict[str, list[TaskAttempt]]:
    grouped: dict[str, list[TaskAttempt]] = {task_id: [] for task_id in task_ids}
    if task_ids:
        rows = (
            TaskAttempt.select()
            .where(TaskAttempt.task.in_(task_ids))
            .order_by(TaskAttempt.task, TaskAttempt.number)
        )
        for attempt in rows:
            grouped[attempt.task_id].append(attempt)
    return grouped


def set_values(experiment: Experiment, set_index: int) -> dict[str, str]:
    sets = experiment.parameters or []
    return sets[set_index]["values"] if set_index < len(sets) else {}


def list_tasks(
    principal: Principal, experiment_id: str, args: dict[str, str | None]
) -> dict[str, Any]:
    """``GET /experiments/{id}/tasks``: paginated in parameter-set order, filterable by status."""
    experiment = get_experiment(principal, experiment_id)
    limit, offset = parse_paging(args.get("limit"), args.get("offset"))
    condition = Task.experiment == experiment.id
    status = args.get("status")
    if status is not None:
        if status not in TaskStatus.__members__:
            raise bad_request("status must be one of " + ", ".join(TaskStatus), field="status")
        condition &= Task.status == status
    total = Task.select().where(condition).count()
    rows = list(Task.select().where(condition).order_by(Task.set_index).limit(limit).offset(offset))
    attempts = _attempts_by_task([task.id for task in rows])
    return {
        "tasks": [
            to_json(task, attempts[task.id], set_values(experiment, task.set_index))
            for task in rows
        ],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


def get(principal: Principal, task_id: str) -> tuple[Task, Experiment]:
    """The task and its experiment, or a 404 when it is unknown or someone else's."""
    row = Task.select(Task, Experiment).join(Experiment).where(Task.id == task_id).first()
    if row is None or not (principal.is_admin or row.experiment.owner_id == principal.username):
        raise not_found("task", task_id)
    return row, row.experiment


def get_json(principal: Principal, task_id: str) -> dict[str, Any]:
    task, experiment = get(principal, task_id)
    attempts = _attempts_by_task([task.id])[task.id]
    return to_json(task, attempts, set_values(experiment, task.set_index))
