"""The experiment and task state machines, defined once and enforced on every status write.

Every module that changes a status calls :func:`check_experiment_transition` or
:func:`check_task_transition` (the model layer does so in its ``set_status`` helpers), so an
illegal move is refused in one place. The diagrams live in ``docs/state-machines.md``.
"""

from __future__ import annotations

from enum import StrEnum


class ExperimentStatus(StrEnum):
    CREATED = "CREATED"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ARCHIVED = "ARCHIVED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_EXPERIMENT


class TaskStatus(StrEnum):
    """Where a task is in its life.

    CREATED   the experiment exists but has not been submitted
    PENDING   submitted, waiting for the scheduler to place it (also after a retry)
    ASSIGNED  placed on a cluster; its attempt is recorded and the batch submission is under way
    QUEUED    the batch system accepted it and it waits in the cluster's queue
    STAGING   input or output data is being moved
    RUNNING   running on a compute node
    COMPLETED / FAILED / CANCELLED   final; ARCHIVED   kept for the record only
    """

    CREATED = "CREATED"
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    STAGING = "STAGING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ARCHIVED = "ARCHIVED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_TASK

    @property
    def is_active(self) -> bool:
        """True while a batch job may exist for the task on some cluster."""
        return self in (
            TaskStatus.ASSIGNED,
            TaskStatus.QUEUED,
            TaskStatus.STAGING,
            TaskStatus.RUNNING,
        )


_FINAL_EXPERIMENT = frozenset(
    {
        ExperimentStatus.COMPLETED,
        ExperimentStatus.FAILED,
        ExperimentStatus.CANCELLED,
        ExperimentStatus.ARCHIVED,
    }
)
_FINAL_TASK = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.ARCHIVED}
)

E = ExperimentStatus
T = TaskStatus

EXPERIMENT_TRANSITIONS: dict[ExperimentStatus, frozenset[ExperimentStatus]] = {
    E.CREATED: frozenset({E.SUBMITTED, E.CANCELLED}),
    E.SUBMITTED: frozenset({E.RUNNING, E.COMPLETED, E.FAILED, E.CANCELLED}),
    E.RUNNING: frozenset({E.COMPLETED, E.FAILED, E.CANCELLED}),
    E.COMPLETED: frozenset({E.ARCHIVED}),
    E.FAILED: frozenset({E.ARCHIVED}),
    E.CANCELLED: frozenset({E.ARCHIVED}),
    E.ARCHIVED: frozenset(),
}

# A retry sends a failed attempt's task back to PENDING, so the active states may all go there.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.CREATED: frozenset({T.PENDING, T.CANCELLED}),
    T.PENDING: frozenset({T.ASSIGNED, T.FAILED, T.CANCELLED}),
    T.ASSIGNED: frozenset(
        {T.QUEUED, T.RUNNING, T.STAGING, T.COMPLETED, T.FAILED, T.CANCELLED, T.PENDING}
    ),
    T.QUEUED: frozenset({T.STAGING, T.RUNNING, T.COMPLETED, T.FAILED, T.CANCELLED, T.PENDING}),
    T.STAGING: frozenset({T.RUNNING, T.COMPLETED, T.FAILED, T.CANCELLED, T.PENDING}),
    T.RUNNING: frozenset({T.STAGING, T.COMPLETED, T.FAILED, T.CANCELLED, T.PENDING}),
    T.COMPLETED: frozenset({T.ARCHIVED}),
    T.FAILED: frozenset({T.ARCHIVED}),
    T.CANCELLED: frozenset({T.ARCHIVED}),
    T.ARCHIVED: frozenset(),
}


class IllegalTransition(Exception):
    """A status change the state machine does not allow; carries both ends for the message."""

    def __init__(self, kind: str, current: str, requested: str) -> None:
        self.kind = kind
        self.current = current
        self.requested = requested
        super().__init__(f"{kind} cannot go from {current} to {requested}")


def check_experiment_transition(current: str, requested: str) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> requested`` is allowed."""
    if ExperimentStatus(requested) not in EXPERIMENT_TRANSITIONS[ExperimentStatus(current)]:
        raise IllegalTransition("experiment", current, requested)


def check_task_transition(current: str, requested: str) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> requested`` is allowed."""
    if TaskStatus(requested) not in TASK_TRANSITIONS[TaskStatus(current)]:
        raise IllegalTransition("task", current, requested)
