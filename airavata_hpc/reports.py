"""Read-only views over an experiment's tasks: summary, progress, timeline, failed tasks,
aggregation and a task's progress. All counting happens in SQL."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import peewee

from airavata_hpc.auth import Principal
from airavata_hpc.errors import ApiError, bad_request, format_time
from airavata_hpc.experiments import get as get_experiment
from airavata_hpc.experiments import int_argument, parse_paging
from airavata_hpc.models import Experiment, ParameterValue, Task, TaskAttempt, TimelineEvent, utcnow
from airavata_hpc.states import ExperimentStatus, TaskStatus
from airavata_hpc.tasks import get as get_task
from airavata_hpc.tasks import set_values, worker_id
from airavata_hpc.transitions import task_counts

FINAL = [status.value for status in TaskStatus if status.is_final]
WAITING = [TaskStatus.PENDING.value, TaskStatus.ASSIGNED.value, TaskStatus.QUEUED.value]
ACTIVE = [TaskStatus.RUNNING.value, TaskStatus.STAGING.value]

# Error text -> a hint for the researcher; the first pattern that matches wins.
SUGGESTED_FIXES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"time ?limit|timed? ?out|timeout|walltime", re.I),
        "The task ran out of time: raise compute_requirements.walltime or split the work.",
    ),
    (
        re.compile(r"out of memory|oom|memory limit|cannot allocate memory", re.I),
        "The task ran out of memory: raise compute_requirements.memory_mb.",
    ),
    (
        re.compile(r"permission denied", re.I),
        "A file or directory was not accessible: check paths and permissions on the cluster.",
    ),
    (
        re.compile(r"no space left|disk quota|quota exceeded|disk full", re.I),
        "The disk or quota is full: free space in the cluster's work directory.",
    ),
    (
        re.compile(r"connection refused|could not resolve|network is unreachable", re.I),
        "A network service was unreachable: check the host and port the command uses.",
    ),
    (
        re.compile(r"command not found|no such file or directory", re.I),
        "A program or file was not found: check command_template and the environment setup.",
    ),
    (
        re.compile(r"node fail|vanished", re.I),
        "The job was lost by the cluster: retry it (compute_requirements.max_retries).",
    ),
]
GENERIC_FIX = "Read the task's stderr in error_message, fix the cause and derive a new experiment."


def suggested_fix(error: str | None) -> str:
    for pattern, hint in SUGGESTED_FIXES:
        if error and pattern.search(error):
            return hint
    return GENERIC_FIX


def _duration_stats(condition: peewee.Expression) -> tuple[float | None, float, int]:
    """(average duration of completed tasks, total cost, tasks with a duration)."""
    avg, cost, n = (
        Task.select(
            peewee.fn.AVG(Task.duration_sec),
            peewee.fn.SUM(Task.cost),
            peewee.fn.COUNT(Task.duration_sec),
        )
        .where(condition & (Task.status == TaskStatus.COMPLETED))
        .scalar(as_tuple=True)
    )
    return (float(avg) if avg is not None else None), float(cost or 0.0), int(n or 0)


def summary(principal: Principal, experiment_id: str) -> dict[str, Any]:
    experiment = get_experiment(principal, experiment_id)
    counts = task_counts(experiment.id)
    total = sum(counts.values())
    completed = counts.get(TaskStatus.COMPLETED, 0)
    failed = counts.get(TaskStatus.FAILED, 0)
    finished = completed + failed
    avg, cost, _ = _duration_stats(Task.experiment == experiment.id)
    clusters = (
        Task.select(Task.cluster, peewee.fn.COUNT(Task.id))
        .where((Task.experiment == experiment.id) & Task.cluster.is_null(False))
        .group_by(Task.cluster)
        .tuples()
    )
    body: dict[str, Any] = {
        "experiment_id": experiment.id,
        "total_tasks": total,
        "completed_tasks": completed,
        "failed_tasks": failed,
        "running_tasks": counts.get(TaskStatus.RUNNING, 0),
        "success_rate": (completed / finished) if finished else 0.0,
        "avg_duration_sec": avg or 0.0,
        "total_cost": cost,
        "resource_usage": {"tasks_by_cluster": dict(clusters), "tasks_by_status": counts},
        "parameter_summary": _parameter_summary(experiment),
        "created_at": format_time(experiment.created_at),
        "updated_at": format_time(experiment.updated_at),
    }
    return body


def _parameter_summary(experiment: Experiment) -> dict[str, Any]:
    rows = (
        ParameterValue.select(
            ParameterValue.name,
            peewee.fn.COUNT(peewee.fn.DISTINCT(ParameterValue.text_value)),
            peewee.fn.MIN(ParameterValue.num_value),
            peewee.fn.MAX(ParameterValue.num_value),
        )
        .where(ParameterValue.experiment == experiment.id)
        .group_by(ParameterValue.name)
        .tuples()
    )
    result: dict[str, Any] = {"parameter_sets": len(experiment.parameters or [])}
    for name, distinct, low, high in rows:
        entry: dict[str, Any] = {"distinct_values": distinct}
        if low is not None:
            entry.update(min=low, max=high)
        result[name] = entry
    return result


def progress(principal: Principal, experiment_id: str) -> dict[str, Any]:
    """Done share (final tasks over all) and an estimate of the end: the average duration of
    completed tasks times the tasks still to run, divided by how many run at once now."""
    experiment = get_experiment(principal, experiment_id)
    counts = task_counts(experiment.id)
    total = sum(counts.values())
    final = sum(counts.get(status, 0) for status in FINAL)
    active = sum(counts.get(status, 0) for status in ACTIVE)
    queued = sum(counts.get(status, 0) for status in WAITING)
    body: dict[str, Any] = {
        "experiment_id": experiment.id,
        "status": experiment.status,
        "progress_percentage": round(100.0 * final / total, 2) if total else 0.0,
        "current_phase": _phase(experiment.status, active, queued),
        "active_tasks": active,
        "queued_tasks": queued,
    }
    avg, _, _ = _duration_stats(Task.experiment == experiment.id)
    remaining = total - final
    if avg is not None and remaining and not ExperimentStatus(experiment.status).is_final:
        seconds = avg * remaining / max(active, 1)
        body["estimated_completion"] = format_time(utcnow() + timedelta(seconds=seconds))
    return body


def _phase(status: str, active: int, queued: int) -> str:
    if status == ExperimentStatus.CREATED:
        return "created"
    if ExperimentStatus(status).is_final:
        return "finished"
    if active:
        return "running"
    return "queued" if queued else "submitted"


def timeline(principal: Principal, experiment_id: str) -> dict[str, Any]:
    experiment = get_experiment(principal, experiment_id)
    rows = (
        TimelineEvent.select()
        .where(TimelineEvent.experiment == experiment.id)
        .order_by(TimelineEvent.timestamp, TimelineEvent.id)
    )
    events = []
    for event in rows:
        item: dict[str, Any] = {
            "event_type": event.event_type,
            "timestamp": format_time(event.timestamp),
            "details": event.details or {},
        }
        if event.task_id:
            item["task_id"] = event.task_id
        if event.worker_id:
            item["worker_id"] = event.worker_id
        events.append(item)
    return {"experiment_id": experiment.id, "events": events}


def failed_tasks(principal: Principal, experiment_id: str) -> list[dict[str, Any]]:
    experiment = get_experiment(principal, experiment_id)
    rows = (
        Task.select()
        .where((Task.experiment == experiment.id) & (Task.status == TaskStatus.FAILED))
        .order_by(Task.set_index)
    )
    result = []
    for task in rows:
        item: dict[str, Any] = {
            "task_id": task.id,
            "experiment_id": experiment.id,
            "name": task.name,
            "error": task.error_message or "",
            "retry_count": task.retry_count,
            "max_retries": task.max_retries,
            "suggested_fix": suggested_fix(task.error_message),
            "parameters": set_values(experiment, task.set_index),
        }
        if task.completed_at:
            item["failed_at"] = format_time(task.completed_at)
        result.append(item)
    return result


GROUP_BY = ("status", "worker", "compute_resource", "parameter_value")


def aggregate(principal: Principal, args: dict[str, str | None]) -> dict[str, Any]:
    """``GET /tasks/aggregate``. ``parameter_value`` groups by each ``name=value`` pair, so a
    sweep shows how every value of every parameter fared; ``worker`` and ``compute_resource``
    both group by cluster, since each batch job is its own worker."""
    experiment_id = args.get("experiment_id")
    if not experiment_id:
        raise bad_request("experiment_id is required", field="experiment_id")
    try:
        experiment = get_experiment(principal, experiment_id)
    except ApiError as exc:
        # The spec lists no 404 here: an unknown experiment is an invalid parameter.
        raise bad_request(exc.message, field="experiment_id") from None
    group_by = args.get("group_by") or "status"
    if group_by not in GROUP_BY:
        raise bad_request("group_by must be one of " + ", ".join(GROUP_BY), field="group_by")
    limit = int_argument("limit", args.get("limit"), default=100, low=1, high=1000)
    _, offset = parse_paging(None, args.get("offset"))

    done = peewee.Case(None, [(Task.status == TaskStatus.COMPLETED, 1)], 0)
    ended = peewee.Case(None, [(Task.status.in_([TaskStatus.COMPLETED, TaskStatus.FAILED]), 1)], 0)
    if group_by == "parameter_value":
        key = ParameterValue.name.concat("=").concat(ParameterValue.text_value)
        base = Task.select(
            key.alias("key"),
            peewee.fn.COUNT(Task.id),
            peewee.fn.SUM(done),
            peewee.fn.SUM(ended),
            peewee.fn.AVG(Task.duration_sec),
            peewee.fn.SUM(Task.cost),
        ).join(
            ParameterValue,
            on=(
                (ParameterValue.experiment == Task.experiment)
                & (ParameterValue.set_index == Task.set_index)
            ),
        )
        group_columns = [ParameterValue.name, ParameterValue.text_value]
    else:
        column = (
            Task.status if group_by == "status" else peewee.fn.COALESCE(Task.cluster, "unassigned")
        )
        base = Task.select(
            column.alias("key"),
            peewee.fn.COUNT(Task.id),
            peewee.fn.SUM(done),
            peewee.fn.SUM(ended),
            peewee.fn.AVG(Task.duration_sec),
            peewee.fn.SUM(Task.cost),
        )
        group_columns = [column]
    query = base.where(Task.experiment == experiment.id).group_by(*group_columns)
    total = query.count()
    groups = []
    for key, count, completed, finished, avg, cost in (
        query.order_by(peewee.SQL("1")).limit(limit).offset(offset).tuples()
    ):
        groups.append(
            {
                "group_key": str(key),
                "count": count,
                "success_rate": (int(completed) / int(finished)) if finished else 0.0,
                "avg_duration_sec": float(avg) if avg is not None else 0.0,
                "total_cost": float(cost or 0.0),
            }
        )
    return {
        "experiment_id": experiment.id,
        "groups": groups,
        "total": total,
        "limit": limit,
        "offset": offset,
    }


def task_progress(principal: Principal, task_id: str) -> dict[str, Any]:
    task, experiment = get_task(principal, task_id)
    latest = (
        TaskAttempt.select()
        .where(TaskAttempt.task == task.id)
        .order_by(TaskAttempt.number.desc())
        .first()
    )
    status = TaskStatus(task.status)
    percent = 100.0 if status.is_final else (50.0 if status in ACTIVE else 0.0)
    body: dict[str, Any] = {
        "task_id": task.id,
        "status": task.status,
        "progress_percentage": percent,
        "current_phase": status.value.lower(),
    }
    worker = worker_id(latest)
    if worker:
        body["worker_id"] = worker
    if status in ACTIVE and task.started_at:
        avg, _, _ = _duration_stats(Task.experiment == experiment.id)
        if avg is not None:
            body["estimated_completion"] = format_time(task.started_at + timedelta(seconds=avg))
    return body
