"""Status writes for many tasks at once, with the state machine enforced in the SQL itself.

``UPDATE task SET status = :to WHERE id IN (...) AND status IN (<allowed predecessors>)``:
a task that moved on meanwhile (cancelled by a user while its job was being submitted, say)
is simply not touched, and the caller learns how many rows did move.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import peewee

from airavata_hpc.models import Experiment, Task, utcnow
from airavata_hpc.states import (
    EXPERIMENT_TRANSITIONS,
    TASK_TRANSITIONS,
    ExperimentStatus,
    TaskStatus,
)


def task_predecessors(status: TaskStatus) -> list[str]:
    return [source.value for source, targets in TASK_TRANSITIONS.items() if status in targets]


def move_tasks(task_ids: Iterable[str], status: TaskStatus, **fields: Any) -> int:
    """Move the given tasks to ``status`` where the machine allows it; returns rows moved."""
    ids = list(task_ids)
    if not ids:
        return 0
    moved = 0
    values = {"status": status.value, "updated_at": utcnow(), **fields}
    for start in range(0, len(ids), 500):
        moved += (
            Task.update(values)
            .where(
                Task.id.in_(ids[start : start + 500]) & Task.status.in_(task_predecessors(status))
            )
            .execute()
        )
    return moved


def move_experiment(experiment_id: str, status: ExperimentStatus) -> bool:
    """Move one experiment if the machine allows it from its current status."""
    sources = [
        source.value for source, targets in EXPERIMENT_TRANSITIONS.items() if status in targets
    ]
    return bool(
        Experiment.update(status=status.value, updated_at=utcnow())
        .where((Experiment.id == experiment_id) & Experiment.status.in_(sources))
        .execute()
    )


def task_counts(experiment_id: str) -> dict[str, int]:
    """How many of the experiment's tasks are in each status (absent statuses left out)."""
    rows = (
        Task.select(Task.status, peewee.fn.COUNT(Task.id))
        .where(Task.experiment == experiment_id)
        .group_by(Task.status)
        .tuples()
    )
    return {status: count for status, count in rows}
