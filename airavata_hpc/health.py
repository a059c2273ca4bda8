"""Health checks: the database ping behind ``/health`` and the component roll-up behind
``/health/detailed``.

Roll-up rule: unhealthy if any component is unhealthy, else degraded if any is degraded.
Database latency under 100 ms is healthy and under 500 ms degraded.
"""

from __future__ import annotations

import time
from typing import Any

from airavata_hpc.db import database

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"


def database_health() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        database.obj.execute_sql("SELECT 1").fetchone()
    except Exception as exc:  # any driver error means the database is not usable
        try:
            database.obj.close()
        except Exception:  # noqa: S110 - closing a broken connection may fail as well
            pass
        return {
            "status": UNHEALTHY,
            "latency_ms": _ms(started),
            "details": {"error": f"{type(exc).__name__}: {exc}".strip()},
        }
    latency = _ms(started)
    status = HEALTHY if latency < 100 else DEGRADED if latency < 500 else UNHEALTHY
    return {
        "status": status,
        "latency_ms": latency,
        "details": {"engine": type(database.obj).__name__},
    }


def roll_up(components: dict[str, dict[str, Any]]) -> str:
    states = {component["status"] for component in components.values()}
    if UNHEALTHY in states:
        return UNHEALTHY
    return DEGRADED if DEGRADED in states else HEALTHY


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
