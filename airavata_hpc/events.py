"""Timeline events, written as things happen so the timeline never has to be reconstructed.

Event types: EXPERIMENT_CREATED, EXPERIMENT_SUBMITTED, EXPERIMENT_CANCELLED,
EXPERIMENT_COMPLETED, EXPERIMENT_FAILED, TASK_SUBMITTED, TASK_STARTED, TASK_COMPLETED,
TASK_FAILED, TASK_RETRIED, TASK_CANCELLED. ``worker_id`` holds ``cluster/native job id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airavata_hpc.models import TimelineEvent, utcnow


def record(
    experiment_id: str,
    event_type: str,
    task_id: str | None = None,
    worker_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    TimelineEvent.create(
        experiment=experiment_id,
        task=task_id,
        event_type=event_type,
        worker_id=worker_id,
        details=details,
    )


def record_many(rows: Iterable[dict[str, Any]]) -> None:
    """Insert many events at once; each row has the keyword arguments of :func:`record`."""
    now = utcnow()
    batch = [
        {
            "experiment": row["experiment_id"],
            "task": row.get("task_id"),
            "event_type": row["event_type"],
            "worker_id": row.get("worker_id"),
            "details": row.get("details"),
            "timestamp": row.get("timestamp", now),
        }
        for row in rows
    ]
    for start in range(0, len(batch), 500):
        TimelineEvent.insert_many(batch[start : start + 500]).execute()
