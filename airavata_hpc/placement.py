"""Choosing the cluster for an experiment's tasks.

For now the rule is simple: the first configured cluster (in file-name order) that the
experiment allows. ``allowed_compute_resources`` (names; empty or absent means any),
``denied_compute_resources`` and ``allowed_compute_types`` (the cluster must offer at least one
of them) all apply. A cost- and deadline-aware scheduler replaces :func:`choose_cluster`
without touching its callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class PlaceableCluster(Protocol):
    name: str
    compute_types: Sequence[str]


def eligible(experiment: Any, clusters: Sequence[PlaceableCluster]) -> list[PlaceableCluster]:
    allowed = set(experiment.allowed_compute_resources or [])
    denied = set(experiment.denied_compute_resources or [])
    types = set(experiment.allowed_compute_types or [])
    return [
        cluster
        for cluster in clusters
        if (not allowed or cluster.name in allowed)
        and cluster.name not in denied
        and (not types or types & set(cluster.compute_types))
    ]


def choose_cluster(
    experiment: Any, clusters: Sequence[PlaceableCluster]
) -> PlaceableCluster | None:
    """The cluster for the experiment's pending tasks, or None when none is allowed."""
    candidates = eligible(experiment, clusters)
    return candidates[0] if candidates else None


def explain_no_cluster(experiment: Any, clusters: Sequence[PlaceableCluster]) -> str:
    """Why nothing fits, in words a researcher can act on."""
    names = ", ".join(cluster.name for cluster in clusters) or "none"
    return (
        "no configured cluster satisfies the experiment's allowed_compute_resources "
        f"({experiment.allowed_compute_resources or 'any'}), denied_compute_resources "
        f"({experiment.denied_compute_resources or 'none'}) and allowed_compute_types "
        f"({experiment.allowed_compute_types or 'any'}); configured clusters: {names}"
    )
