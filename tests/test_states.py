"""The state machines: what may follow what, and what the API does with an illegal move."""

from __future__ import annotations

import pytest

from airavata_hpc.states import (
    EXPERIMENT_TRANSITIONS,
    TASK_TRANSITIONS,
    ExperimentStatus,
    IllegalTransition,
    TaskStatus,
    check_experiment_transition,
    check_task_transition,
)


def test_every_status_has_a_row_and_final_states_only_archive():
    assert set(EXPERIMENT_TRANSITIONS) == set(ExperimentStatus)
    assert set(TASK_TRANSITIONS) == set(TaskStatus)
    for status in TaskStatus:
        if status.is_final:
            assert TASK_TRANSITIONS[status] <= {TaskStatus.ARCHIVED}


@pytest.mark.parametrize(
    "current, requested",
    [
        ("CREATED", "RUNNING"),
        ("COMPLETED", "RUNNING"),
        ("CANCELLED", "SUBMITTED"),
        ("ARCHIVED", "CREATED"),
    ],
)
def test_illegal_experiment_moves_name_both_ends(current, requested):
    with pytest.raises(IllegalTransition) as caught:
        check_experiment_transition(current, requested)
    assert current in str(caught.value) and requested in str(caught.value)


def test_a_retry_returns_an_active_task_to_pending():
    for status in ("ASSIGNED", "QUEUED", "RUNNING"):
        check_task_transition(status, "PENDING")
    with pytest.raises(IllegalTransition):
        check_task_transition("COMPLETED", "PENDING")
    with pytest.raises(IllegalTransition):
        check_task_transition("CREATED", "RUNNING")
