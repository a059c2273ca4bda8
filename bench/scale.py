"""Do list, search and aggregation stay fast at a million tasks? Latency on a large database,
with the plan of every slow query.

The claim checked (``airavata_hpc/models.py``): "indexes chosen so list, search and aggregation
stay fast at a million tasks". The script prints figures and makes no assertion; it exits 0
whatever they are (non-zero only when the benchmark itself breaks).

1. Seed. ``--experiments`` (default 1,000) experiments of ``--tasks / --experiments`` parameter
   sets each (default 1,000,000 tasks), owned round-robin by four users. Every set has a
   numeric parameter ``alpha`` (each experiment sweeps a 0.2 wide band somewhere in [0, 1)) and
   a text parameter ``mode`` (one to four of fast/slow/exact/balanced). The newest experiments
   are RUNNING (about 3,000 tasks QUEUED or RUNNING, all on the cluster ``bigiron``, plus
   PENDING ones), one in seven of the others FAILED (8% of its tasks failed), the rest
   COMPLETED. Every task that left PENDING has an attempt (failed tasks two, after a retry);
   every experiment has two of eight tags and its creation and submission events. The four
   newest experiments go through ``experiments.create`` (one per user, left CREATED), and the
   rows the bulk generator would write for them are compared with what ``create`` wrote, so
   the bulk rows have the service's shape. The rest is written with COPY (PostgreSQL) or one
   prepared ``executemany`` (SQLite) per table and chunk. PostgreSQL then gets ``VACUUM
   ANALYZE``, as autovacuum would do on a live database; SQLite gets nothing unless
   ``--sqlite-analyze``, because the service never runs ``ANALYZE`` there.
2. HTTP. The real server in a subprocess, exactly as ``bench/api.py`` starts it (its
   ``running_server``, no execution engine), and one keep-alive connection sending sequential
   requests (``--requests``, default 50, at most ``--budget`` seconds per row) to each
   endpoint, once with an admin's token (sees every experiment) and once with the owner's (a
   normal user, owner scoping in force).
3. In process. Every endpoint's service function is called again with peewee's SQL log
   captured, each statement is re-run and timed, and so is ``json.dumps`` of the answer: where
   the time goes. The engine's own queries are reproduced and timed the same way (the poll of
   one cluster's active attempts, per-experiment counts of ``_settle_experiments``, ...).
4. Every operation of ``--slow-ms`` (default 50) or more at p50 is broken down (SQL, Python,
   answer size). Every statement of ``--slow-ms`` or more (or of a fifth of it within a slow
   operation that is mostly SQL) is printed with its parameters, its plan (``EXPLAIN ANALYZE``
   on PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite), the indexes the plan uses, the scans it
   does with no search condition, and what would fix it (``ADVICE`` / ``NOTES`` below, written
   from this benchmark's plans).
5. What-ifs: the proposed fixes measured in process on the same data (a list page without
   ``parameters``; the search's filter correlated per experiment, with and without two
   indexes; a (state, cluster) index on task_attempt). The package is not changed: the what-if
   queries are built here and the indexes made in the benchmark's database, then dropped.

PostgreSQL: ``--postgres-url`` (default ``postgresql://postgres@127.0.0.1:5432/test``); only the
schema ``--schema`` (default ``bench_scale``) is used, created at the start and dropped at the
end. SQLite: a WAL file in a temporary directory, removed at the end.

    /work/venv/bin/python bench/scale.py                       # both databases, ~8 min
    /work/venv/bin/python bench/scale.py --database sqlite --tasks 100000 --requests 10
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import logging
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import peewee
import tornado
from playhouse.db_url import connect

from airavata_hpc import auth, experiments, reports, tasks
from airavata_hpc.auth import Principal
from airavata_hpc.command_template import render_command
from airavata_hpc.db import database
from airavata_hpc.engine import ACTIVE_ATTEMPT
from airavata_hpc.models import (
    Experiment,
    ExperimentTag,
    ParameterValue,
    Task,
    TaskAttempt,
    TimelineEvent,
    utcnow,
)
from airavata_hpc.search import _clause_condition, matching_experiments, parse_filter
from airavata_hpc.server import prepare
from airavata_hpc.settings import Settings
from airavata_hpc.states import ExperimentStatus, TaskStatus
from airavata_hpc.transitions import task_counts

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api as bench_api  # noqa: E402  (bench/api.py: server subprocess and HTTP client)

API = "/api/v1"
USERS = ("alice", "bob", "carol", "dave")
ADMIN = "root"
CLUSTERS = ("bigiron", "campus", "cloud")
ACTIVE_CLUSTER = "bigiron"  # every QUEUED / RUNNING attempt is here
TAG_POOL = ("baseline", "gpu", "nightly", "ablation", "paper", "cpu", "large", "debug")
MODES = ("fast", "slow", "exact", "balanced")
TEMPLATE = "run --alpha {{ alpha }} --mode {{ mode }}"
DESCRIPTION = "scale benchmark sweep"
REQUIREMENTS = {"max_retries": 1}
PARAMETER_FILTER = "alpha>0.5,mode=fast"
TAGS_QUERY = "gpu,nightly"
API_CREATED = 4  # the newest experiments, created through experiments.create
ACTIVE_TARGET = 3000  # QUEUED + RUNNING attempts wanted on ACTIVE_CLUSTER
CHUNK_TASKS = 50_000  # rows of task per bulk transaction
ERRORS = (
    (140, "slurmstepd: error: *** JOB CANCELLED DUE TO TIME LIMIT ***"),
    (137, "MemoryError: out of memory (cgroup memory limit reached)"),
    (1, "ValueError: alpha out of range for mode"),
)
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_SCHEMA = "bench_scale"


def compact(value: Any) -> str:
    """JSON as ``JSONField`` stores it and the handlers send it."""
    return json.dumps(value, separators=(",", ":"))


def stamp(moment: datetime) -> str:
    """A naive UTC time as both databases take it in text."""
    return moment.isoformat(" ", "microseconds")


# ---------------------------------------------------------------------------------------------
# What to seed


@dataclass(frozen=True)
class Plan:
    """One experiment of the seeded database."""

    index: int
    name: str
    owner: str
    project: str
    status: str
    created: datetime
    tags: list[str]
    values: list[tuple[str, str]]  # (alpha, mode) of each parameter set

    def body(self) -> dict[str, Any]:
        """The ``POST /experiments`` body of this experiment."""
        return {
            "name": self.name,
            "project_id": self.project,
            "description": DESCRIPTION,
            "command_template": TEMPLATE,
            "compute_requirements": dict(REQUIREMENTS),
            "metadata": {"tags": list(self.tags)},
            "parameters": [
                {"id": f"p{j}", "values": {"alpha": alpha, "mode": mode}}
                for j, (alpha, mode) in enumerate(self.values)
            ],
        }


@dataclass(frozen=True)
class Shape:
    experiments: int
    sets: int
    running: int  # RUNNING experiments, just before the API-created ones
    epoch: datetime

    @property
    def tasks(self) -> int:
        return self.experiments * self.sets

    def plan(self, index: int) -> Plan:
        last = self.experiments - 1
        if index > last - API_CREATED:
            status = ExperimentStatus.CREATED
        elif index > last - API_CREATED - self.running:
            status = ExperimentStatus.RUNNING
        elif index % 7 == 3:
            status = ExperimentStatus.FAILED
        else:
            status = ExperimentStatus.COMPLETED
        low = (index % 20) * 0.04
        kinds = 1 + index % 4
        values = [
            (f"{low + 0.2 * j / self.sets:.4f}", MODES[(index + j % kinds) % 4])
            for j in range(self.sets)
        ]
        return Plan(
            index=index,
            name=f"sweep-{(index * 7919) % 100_003:05d}",
            owner=USERS[index % len(USERS)],
            project=f"project-{index % 10}",
            status=status.value,
            created=self.epoch + timedelta(minutes=index * 500),
            tags=sorted({TAG_POOL[(index // 4) % 8], TAG_POOL[(index // 32) % 8]}),
            values=values,
        )


def make_shape(tasks_wanted: int, experiments_wanted: int) -> Shape:
    count = max(API_CREATED + 2, min(experiments_wanted, tasks_wanted))
    sets = max(1, tasks_wanted // count)
    # A RUNNING experiment has 30% of its tasks QUEUED or RUNNING.
    running = max(1, min(count // 10, round(ACTIVE_TARGET / (0.3 * sets))))
    epoch = (utcnow() - timedelta(minutes=500 * count + 60 * 24)).replace(microsecond=0)
    return Shape(count, sets, running, epoch)


def task_status(plan: Plan, j: int) -> str:
    """The status of set ``j``'s task: all CREATED or COMPLETED, 8% FAILED in a FAILED
    experiment, a mix with 30% QUEUED / RUNNING in a RUNNING one."""
    if plan.status in ("CREATED", "COMPLETED"):
        return plan.status
    r = (j * 37 + plan.index * 11) % 100
    if plan.status == "FAILED":
        return "FAILED" if r < 8 else "COMPLETED"
    for bound, status in ((45, "COMPLETED"), (50, "FAILED"), (70, "RUNNING"), (80, "QUEUED")):
        if r < bound:
            return status
    return "PENDING"


# Column orders of the rows the generator writes (checked against the models at start).
COLUMNS: dict[type[peewee.Model], tuple[str, ...]] = {
    Experiment: (
        "id", "name", "description", "project_id", "owner_id", "status", "command_template",
        "output_pattern", "parameters", "compute_requirements", "data_requirements",
        "allowed_compute_resources", "denied_compute_resources", "allowed_compute_types",
        "cost_weights", "deadline", "metadata", "max_retries", "created_at", "updated_at",
    ),
    ExperimentTag: ("experiment_id", "tag"),
    ParameterValue: ("experiment_id", "set_index", "name", "text_value", "num_value"),
    Task: (
        "id", "experiment_id", "set_index", "parameter_set_id", "name", "command", "output_path",
        "status", "cluster", "retry_count", "max_retries", "exit_code", "error_message",
        "duration_sec", "cost", "assigned_at", "started_at", "completed_at", "result_summary",
        "execution_metrics", "metadata", "created_at", "updated_at",
    ),
    TaskAttempt: (
        "id", "task_id", "number", "cluster", "submission_id", "array_index", "job_name",
        "native_job_id", "work_dir", "state", "host", "exit_code", "error", "submitted_at",
        "started_at", "completed_at", "missing_since", "submit_failures",
    ),
    TimelineEvent: ("experiment_id", "task_id", "event_type", "timestamp", "worker_id", "details"),
}  # fmt: skip


def check_columns() -> None:
    for model, columns in COLUMNS.items():
        known = {f.column_name for f in model._meta.sorted_fields}
        auto = {f.column_name for f in model._meta.sorted_fields if isinstance(f, peewee.AutoField)}
        if set(columns) != known - auto:
            raise RuntimeError(f"{model.__name__}: columns {sorted(known - auto)} changed")


def render(alpha: str, mode: str) -> str:
    """``TEMPLATE`` rendered as ``command_template.render_command`` does (checked on the
    API-created experiments), without Jinja's cost per task."""
    return f"run --alpha {shlex.quote(alpha)} --mode {shlex.quote(mode)}"


def generate(plan: Plan, experiment_id: str) -> dict[type[peewee.Model], list[tuple]]:
    """Every row of one experiment, in ``COLUMNS`` order, with the values the database gets."""
    created = stamp(plan.created)
    submitted_at = plan.created + timedelta(minutes=5)
    submitted = stamp(submitted_at)
    final = plan.status in (ExperimentStatus.COMPLETED, ExperimentStatus.FAILED)
    finished = plan.created + timedelta(seconds=2 * len(plan.values) + 1200)
    rows: dict[type[peewee.Model], list[tuple]] = {model: [] for model in COLUMNS}
    rows[Experiment].append(
        (
            experiment_id, plan.name, DESCRIPTION, plan.project, plan.owner, plan.status,
            TEMPLATE, None, compact(plan.body()["parameters"]), compact(REQUIREMENTS), None, None,
            None, None, None, None, compact({"tags": plan.tags}), REQUIREMENTS["max_retries"],
            created, stamp(finished) if final else created,
        )
    )  # fmt: skip
    rows[ExperimentTag] += [(experiment_id, tag) for tag in plan.tags]
    events = rows[TimelineEvent]
    details = {"task_count": len(plan.values) or 1, "owner_id": plan.owner}
    events.append((experiment_id, None, "EXPERIMENT_CREATED", created, None, compact(details)))
    if plan.status != ExperimentStatus.CREATED:
        events.append((experiment_id, None, "EXPERIMENT_SUBMITTED", submitted, None, None))

    cluster = ACTIVE_CLUSTER if plan.status == ExperimentStatus.RUNNING else None
    cluster = cluster or CLUSTERS[plan.index % len(CLUSTERS)]
    submissions: dict[int, tuple[str, str, int]] = {}
    values, task_rows, attempts = rows[ParameterValue], rows[Task], rows[TaskAttempt]
    retry_submission = uuid.uuid4().hex
    for j, (alpha, mode) in enumerate(plan.values):
        values.append((experiment_id, j, "alpha", alpha, float(alpha)))
        values.append((experiment_id, j, "mode", mode, None))
        status = task_status(plan, j)
        task_id = str(uuid.uuid4())
        name = f"{plan.name}:p{j}"[:255]
        command = render(alpha, mode)
        if status in ("CREATED", "PENDING"):
            task_rows.append(
                (
                    task_id, experiment_id, j, f"p{j}", name, command, None, status, None, 0,
                    REQUIREMENTS["max_retries"], None, None, None, None, None, None, None,
                    None, None, None, created, created,
                )
            )  # fmt: skip
            continue

        chunk = j // 1000
        if chunk not in submissions:
            submission = uuid.uuid4().hex
            submissions[chunk] = (submission, f"ah-{submission[:16]}", 200_000 + plan.index * 8)
        submission, job_name, job = submissions[chunk]
        started_at = submitted_at + timedelta(seconds=2 * j + 30)
        duration = 60.0 + (j * 97 + plan.index) % 900
        ended_at = started_at + timedelta(seconds=duration)
        host = f"node{j % 64:02d}"
        work_dir = f"/scratch/airavata/experiments/{experiment_id}/{job_name}/t{j % 1000}"
        started = stamp(started_at) if status != "QUEUED" else None
        ended = stamp(ended_at) if status in ("COMPLETED", "FAILED") else None
        exit_code, error = (0, None) if status == "COMPLETED" else (None, None)
        if status == "FAILED":
            exit_code, error = ERRORS[j % len(ERRORS)]
        duration_sec = duration if ended else None
        cost = round(duration / 3600 * 0.08, 6) if ended else None
        retried = status == "FAILED"
        task_rows.append(
            (
                task_id, experiment_id, j, f"p{j}", name, command, None, status, cluster,
                int(retried), REQUIREMENTS["max_retries"], exit_code, error, duration_sec, cost,
                submitted, started, ended, None, None, None, created, ended or started or created,
            )
        )  # fmt: skip
        native = f"{job + chunk}_{j % 1000}"
        attempts.append(
            (
                uuid.uuid4().hex, task_id, 1, cluster, submission, j % 1000, job_name, native,
                work_dir, status, host if started else None, exit_code, error, submitted,
                started, ended, None, 0,
            )
        )  # fmt: skip
        if retried:  # the first attempt failed as well, the retry is the one above
            first = (
                uuid.uuid4().hex, task_id, 1, cluster, retry_submission, j % 1000,
                f"ah-{retry_submission[:16]}", f"{job + 7}_{j % 1000}", work_dir, "FAILED", host,
                exit_code, error, submitted, submitted, submitted, None, 0,
            )  # fmt: skip
            attempts[-1] = attempts[-1][:2] + (2,) + attempts[-1][3:]
            attempts.append(first)
    return rows


# ---------------------------------------------------------------------------------------------
# Seeding


class Loader:
    """Bulk writes: COPY on PostgreSQL, one prepared ``executemany`` on SQLite."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.pg = isinstance(db, peewee.PostgresqlDatabase)

    def write(self, model: type[peewee.Model], rows: list[tuple]) -> None:
        if not rows:
            return
        table = model._meta.table_name
        columns = ", ".join(f'"{name}"' for name in COLUMNS[model])
        if self.pg:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(rows)
            buffer.seek(0)
            self.db.cursor().copy_expert(
                f'COPY "{table}" ({columns}) FROM STDIN WITH (FORMAT csv)', buffer
            )
        else:
            marks = ", ".join("?" * len(COLUMNS[model]))
            self.db.cursor().executemany(
                f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', rows
            )


@dataclass
class Seeded:
    shape: Shape
    target: Plan  # the experiment the per-experiment endpoints read
    target_id: str
    task_id: str  # a failed task of the target, with two attempts
    user: str  # the target's owner: the normal user of the measurements
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def seed(db: peewee.Database, shape: Shape, sqlite_analyze: bool) -> Seeded:
    started = time.perf_counter()
    check_columns()
    for user in USERS:
        auth.ensure_user(user)
    auth.ensure_user(ADMIN, is_admin=True)
    plans = [shape.plan(index) for index in range(shape.experiments)]
    notes = []

    # The newest few through the service, then the same rows from the generator compared.
    clock = time.perf_counter()
    created_ids = {}
    for plan in plans[-API_CREATED:]:
        experiment = experiments.create(Principal(plan.owner), plan.body())
        created_ids[plan.index] = experiment.id
    api_seconds = time.perf_counter() - clock
    problems = [
        problem
        for plan in plans[-API_CREATED:]
        for problem in compare_shape(db, plan, created_ids[plan.index])
    ]
    notes.append(
        f"{API_CREATED} experiments x {shape.sets:,} sets through experiments.create in "
        f"{api_seconds:.1f} s; the bulk rows for the same plans match what create wrote "
        f"(experiment, tags, values, tasks, event): {'no' if problems else 'yes'}"
    )
    notes += [f"!! shape differs: {problem}" for problem in problems[:10]]

    if not isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("PRAGMA cache_size = -400000")  # this connection only, while seeding
    loader = Loader(db)
    clock = time.perf_counter()
    generate_seconds = 0.0
    per_chunk = max(1, CHUNK_TASKS // shape.sets)
    bulk = plans[:-API_CREATED]
    target = None
    for start in range(0, len(bulk), per_chunk):
        batch: dict[type[peewee.Model], list[tuple]] = {model: [] for model in COLUMNS}
        generating = time.perf_counter()
        for plan in bulk[start : start + per_chunk]:
            experiment_id = str(uuid.uuid4())
            for model, rows in generate(plan, experiment_id).items():
                batch[model] += rows
            if plan.status == ExperimentStatus.RUNNING:
                target = (plan, experiment_id)
        generate_seconds += time.perf_counter() - generating
        with db.atomic():
            for model in COLUMNS:
                loader.write(model, batch[model])
    bulk_seconds = time.perf_counter() - clock
    notes.append(
        f"{len(bulk):,} experiments in bulk in {bulk_seconds:.1f} s "
        f"({generate_seconds:.1f} s of it generating rows in Python)"
    )

    clock = time.perf_counter()
    if isinstance(db, peewee.PostgresqlDatabase):
        for model in COLUMNS:
            db.execute_sql(f'VACUUM ANALYZE "{model._meta.table_name}"')
        notes.append(f"VACUUM ANALYZE in {time.perf_counter() - clock:.1f} s")
    else:
        db.execute_sql("PRAGMA cache_size = -32000")  # back to the service's setting
        if sqlite_analyze:
            db.execute_sql("ANALYZE")
            notes.append(f"ANALYZE in {time.perf_counter() - clock:.1f} s")
        else:
            notes.append("no ANALYZE (the service never runs it on SQLite)")
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    assert target is not None, "a RUNNING experiment is always planned"
    plan, target_id = target
    failed = (
        Task.select(Task.id)
        .where((Task.experiment == target_id) & (Task.status == TaskStatus.FAILED))
        .order_by(Task.set_index)
        .first()
    )
    task_id = failed.id if failed else Task.get(Task.experiment == target_id).id
    return Seeded(shape, plan, target_id, task_id, plan.owner, time.perf_counter() - started, notes)


def compare_shape(db: peewee.Database, plan: Plan, experiment_id: str) -> list[str]:
    """What ``experiments.create`` wrote for ``plan``, against what ``generate`` makes of it
    (ids and timestamps aside)."""
    expected = generate(plan, experiment_id)
    skip = {"id", "created_at", "updated_at", "timestamp"}
    problems = []
    for model, rows in expected.items():
        if model is TaskAttempt:  # a CREATED experiment has none, and no experiment_id column
            continue
        columns = COLUMNS[model]
        keep = [i for i, name in enumerate(columns) if name not in skip]
        key = "id" if model is Experiment else "experiment_id"
        order = {Task: "set_index", ParameterValue: "set_index, name", ExperimentTag: "tag"}
        sql = (
            f'SELECT {", ".join(columns)} FROM "{model._meta.table_name}" '
            f"WHERE {key} = {db.param} ORDER BY {order.get(model, '1')}"
        )
        stored = db.execute_sql(sql, (experiment_id,)).fetchall()
        wanted = [tuple(row[i] for i in keep) for row in rows]
        got = [tuple(row[i] for i in keep) for row in stored]
        if wanted != got:
            diff = next((f"{w} != {g}" for w, g in zip(wanted, got, strict=False) if w != g), "")
            problems.append(f"{model.__name__}: {len(got)} rows stored, {len(wanted)} made {diff}")
    sample = plan.values[: min(20, len(plan.values))]
    for alpha, mode in sample:
        if render(alpha, mode) != render_command(TEMPLATE, {"alpha": alpha, "mode": mode}):
            problems.append(f"command for {alpha}, {mode} differs from render_command")
    return problems


def table_counts(db: peewee.Database) -> str:
    parts = []
    for model in COLUMNS:
        (count,) = db.execute_sql(f'SELECT COUNT(*) FROM "{model._meta.table_name}"').fetchone()
        parts.append(f"{model._meta.table_name} {count:,}")
    active = (
        TaskAttempt.select()
        .where((TaskAttempt.cluster == ACTIVE_CLUSTER) & TaskAttempt.state.in_(ACTIVE_ATTEMPT))
        .count()
    )
    statuses = dict(
        Task.select(Task.status, peewee.fn.COUNT(Task.id)).group_by(Task.status).tuples()
    )
    shares = ", ".join(f"{status} {count:,}" for status, count in sorted(statuses.items()))
    return (
        f"rows: {', '.join(parts)}\n  tasks by status: {shares}\n"
        f"  active attempts (QUEUED/RUNNING) on {ACTIVE_CLUSTER}: {active:,}"
    )


def database_size(db: peewee.Database, path: Path | None) -> str:
    if path is not None:
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    else:
        (size,) = db.execute_sql(
            "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        ).fetchone()
    return f"{int(size) / 2**20:,.0f} MiB"


# ---------------------------------------------------------------------------------------------
# What is measured


@dataclass(frozen=True)
class Endpoint:
    label: str
    path: str  # under API
    call: Callable[[Principal], Any]  # the same service function, in process
    answer: Callable[[Any], str]  # a few words on what came back


def endpoints(seeded: Seeded) -> list[Endpoint]:
    eid, tid = seeded.target_id, seeded.task_id
    quote = urllib.parse.urlencode

    def page(body: dict[str, Any]) -> str:
        return f"{len(body['experiments'])} of {body['total']:,}"

    return [
        Endpoint(
            "GET /experiments?limit=100",
            "/experiments?limit=100",
            lambda p: experiments.list_experiments(p, {"limit": "100"}),
            page,
        ),
        Endpoint(
            f"GET /experiments/search {PARAMETER_FILTER}",
            f"/experiments/search?{quote({'parameter_filter': PARAMETER_FILTER})}",
            lambda p: experiments.search(p, {"parameter_filter": PARAMETER_FILTER}),
            page,
        ),
        Endpoint(
            f"GET /experiments/search tags={TAGS_QUERY} sort_by=name",
            f"/experiments/search?{quote({'tags': TAGS_QUERY, 'sort_by': 'name'})}",
            lambda p: experiments.search(p, {"tags": TAGS_QUERY, "sort_by": "name"}),
            page,
        ),
        Endpoint(
            "GET /experiments/{id}/progress",
            f"/experiments/{eid}/progress",
            lambda p: reports.progress(p, eid),
            lambda b: f"{b['progress_percentage']}%, {b['active_tasks']} active",
        ),
        Endpoint(
            "GET /experiments/{id}/summary",
            f"/experiments/{eid}/summary",
            lambda p: reports.summary(p, eid),
            lambda b: f"{b['total_tasks']:,} tasks, {b['failed_tasks']} failed",
        ),
        Endpoint(
            "GET /experiments/{id}/tasks?status=FAILED",
            f"/experiments/{eid}/tasks?status=FAILED&limit=100",
            lambda p: tasks.list_tasks(p, eid, {"status": "FAILED", "limit": "100"}),
            lambda b: f"{len(b['tasks'])} of {b['total']:,}",
        ),
        Endpoint(
            "GET /tasks/aggregate parameter_value",
            f"/tasks/aggregate?{quote({'experiment_id': eid, 'group_by': 'parameter_value'})}",
            lambda p: reports.aggregate(p, {"experiment_id": eid, "group_by": "parameter_value"}),
            lambda b: f"{len(b['groups'])} of {b['total']:,} groups",
        ),
        Endpoint(
            "GET /tasks/{id}",
            f"/tasks/{tid}",
            lambda p: tasks.get_json(p, tid),
            lambda b: f"{b['status']}, {len(b['worker_assignment_history'])} attempts",
        ),
    ]


def engine_queries() -> list[tuple[str, Callable[[], int]]]:
    """The engine's queries, as ``airavata_hpc/engine.py`` builds them; each returns rows."""
    cluster = ACTIVE_CLUSTER

    def poll() -> int:  # Engine._poll
        return len(
            list(
                TaskAttempt.select(TaskAttempt, Task.id, Task.experiment, Task.started_at)
                .join(Task)
                .where(
                    (TaskAttempt.cluster == cluster)
                    & TaskAttempt.state.in_(ACTIVE_ATTEMPT)
                    & TaskAttempt.native_job_id.is_null(False)
                )
            )
        )

    def capacity() -> int:  # Engine._capacity
        return (
            TaskAttempt.select()
            .where(
                (TaskAttempt.cluster == cluster)
                & TaskAttempt.state.in_(("ASSIGNED", *ACTIVE_ATTEMPT))
            )
            .count()
        )

    def submit_assigned() -> int:  # Engine._submit_assigned
        return len(
            TaskAttempt.select(
                TaskAttempt.submission_id, peewee.fn.MAX(TaskAttempt.submit_failures)
            )
            .where(
                (TaskAttempt.cluster == cluster)
                & (TaskAttempt.state == "ASSIGNED")
                & TaskAttempt.native_job_id.is_null()
            )
            .group_by(TaskAttempt.submission_id)
            .tuples()
        )

    def cancel_requested() -> int:  # Engine._cancel_requested
        return len(
            list(
                TaskAttempt.select().where(
                    (TaskAttempt.cluster == cluster) & (TaskAttempt.state == "CANCEL_REQUESTED")
                )
            )
        )

    def place_pending() -> int:  # Engine._place_pending
        return len(
            Task.select(Task.experiment)
            .where(Task.status == TaskStatus.PENDING)
            .distinct()
            .tuples()
        )

    def settle() -> int:  # Engine._settle_experiments, reads only
        open_experiments = Experiment.select(Experiment.id, Experiment.status).where(
            Experiment.status.in_([ExperimentStatus.SUBMITTED, ExperimentStatus.RUNNING])
        )
        count = 0
        for experiment in open_experiments:
            count += 1
            task_counts(experiment.id)
        return count

    def health_active() -> int:  # Engine.health, behind /health/detailed
        return TaskAttempt.select().where(TaskAttempt.state.in_(ACTIVE_ATTEMPT)).count()

    def reconcile() -> int:  # Engine.reconcile, at start-up
        return len(
            TaskAttempt.select(TaskAttempt.cluster)
            .distinct()
            .where(TaskAttempt.state.in_(("ASSIGNED", *ACTIVE_ATTEMPT)))
            .tuples()
        )

    return [
        (f"_poll: active attempts of {cluster} + task", poll),
        ("_capacity: busy attempts of the cluster", capacity),
        ("_submit_assigned: unsubmitted submissions", submit_assigned),
        ("_cancel_requested: attempts to cancel", cancel_requested),
        ("_place_pending: experiments with PENDING", place_pending),
        ("_settle_experiments: open + task_counts each", settle),
        ("health(): active attempts, all clusters", health_active),
        ("reconcile(): clusters with active attempts", reconcile),
    ]


# ---------------------------------------------------------------------------------------------
# Timing and plans


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def repeat(fn: Callable[[], Any], runs: int, seconds: float) -> tuple[list[float], Any]:
    """Milliseconds of up to ``runs`` calls (at least one, stopping after ``seconds``)."""
    times: list[float] = []
    result = None
    deadline = time.perf_counter() + seconds
    while len(times) < runs and (not times or time.perf_counter() < deadline):
        clock = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - clock) * 1000)
    return times, result


class _SqlLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[tuple[str, tuple]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple) and len(record.msg) == 2:
            sql, params = record.msg
            self.statements.append((sql, tuple(params or ())))


@contextmanager
def sql_log() -> Iterator[list[tuple[str, tuple]]]:
    """The statements peewee runs meanwhile (it logs each one to ``peewee`` at DEBUG)."""
    logger = logging.getLogger("peewee")
    handler = _SqlLog()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield handler.statements
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@dataclass
class Statement:
    sql: str
    params: tuple
    times: list[float]
    rows: int
    where: str  # the endpoint or engine query that runs it

    @property
    def ms(self) -> float:
        return statistics.median(self.times)


def time_statement(db: peewee.Database, sql: str, params: tuple, where: str) -> Statement:
    def run() -> int:
        return len(db.execute_sql(sql, params).fetchall())

    times, rows = repeat(run, 5, 2.0)
    return Statement(sql, params, times, rows, where)


def explain(db: peewee.Database, sql: str, params: tuple) -> list[str]:
    if isinstance(db, peewee.PostgresqlDatabase):
        return [row[0] for row in db.execute_sql(f"EXPLAIN ANALYZE {sql}", params).fetchall()]
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in db.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params):
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return lines


def _pg_scans(lines: list[str]) -> tuple[list[str], list[str]]:
    """Indexes a PostgreSQL plan uses, and its scans without a search condition: sequential
    scans, and index scans without ``Index Cond`` (all of it, unless a LIMIT stops it early:
    see the rows per loop and loops from EXPLAIN ANALYZE)."""
    indexes, full = set(), []
    for number, line in enumerate(lines):
        seq = re.search(r"Seq Scan on (\S+)", line)
        scan = re.search(r"Index (?:Only )?Scan(?: Backward)? using (\S+) on (\S+)", line)
        bitmap = re.search(r"Bitmap Index Scan on (\S+)", line)
        counts = re.search(r"actual time=\S+ rows=(\d+) loops=(\d+)", line)
        size = f", {int(counts[1]):,} rows x {counts[2]} loops" if counts else ""
        if seq:
            full.append(f"{seq[1]} (table{size})")
        if bitmap:
            indexes.add(bitmap[1])
        if not scan:
            continue
        indexes.add(scan[1])
        depth = len(line) - len(line.lstrip())
        details = []
        for following in lines[number + 1 :]:
            if "->" in following or len(following) - len(following.lstrip()) <= depth:
                break
            details.append(following)
        if not any("Index Cond" in detail for detail in details):
            full.append(f"{scan[2]} (index {scan[1]}{size})")
    return sorted(indexes), full


def plan_findings(lines: list[str], pg: bool) -> str:
    """The indexes a plan uses, the scans it does without a search condition (whole tables
    or indexes, unless a LIMIT stops them) and the sorts it does."""
    text = "\n".join(lines)
    if pg:
        indexes, full = _pg_scans(lines)
        sorts = re.findall(r"Sort Method: (\S+)", text)
        hashes = len(re.findall(r"HashAggregate|Hash Join|Hash Semi Join", text))
        extra = f"; sorts: {', '.join(sorts)}" if sorts else ""
        extra += f"; hash steps: {hashes}" if hashes else ""
    else:
        indexes = sorted(set(re.findall(r"USING (?:COVERING )?INDEX (\S+)", text)))
        indexes += ["(primary key)"] if "PRIMARY KEY" in text else []
        whole_index = re.findall(r"SCAN (\S+) USING \S* ?INDEX (\S+)", text)
        full = sorted(
            {f"{table} (table)" for table in re.findall(r"^\s*SCAN (\S+)\s*$", text, re.M)}
            | {f"{table} (index {index})" for table, index in whole_index}
        )
        temp = re.findall(r"USE TEMP B-TREE FOR ([A-Z ]+)", text)
        extra = f"; temp b-tree for: {', '.join(temp)}" if temp else ""
    return (
        f"indexes used: {', '.join(indexes) or 'none'}; "
        f"scanned with no search condition: {', '.join(full) or 'nothing'}{extra}"
    )


# ---------------------------------------------------------------------------------------------
# What fixes it: written from this benchmark's figures and plans, printed where they apply. The
# what-ifs at the end of each database measure the proposed changes on the seeded data.

# Slow statements, recognised by their SQL.
ADVICE: list[tuple[str, str | None, str]] = [  # (SQL pattern, "sqlite"/"pg"/None, text)
    (
        r'IN \(SELECT "pv0"\."experiment_id" FROM "parameter_value"',
        "sqlite",
        "search.matching_experiments builds `experiment.id IN (SELECT pv0.experiment_id ...)`, "
        "which SQLite evaluates value by value: every value matching the first clause, in "
        "every experiment (here alpha > 0.5: about 40% of all alpha rows), is read through "
        "(name, num_value) / (name, text_value) and probes (experiment_id, set_index) plus "
        "the table for the second clause; twice per request (COUNT and page), whatever the "
        "page size. Query change: correlate per experiment, `EXISTS (SELECT 1 FROM "
        "parameter_value pv0 WHERE pv0.experiment_id = t1.id AND <clause 0> AND EXISTS (... "
        "pv1 of the same set ...))`: the page stops after `limit` matches and each experiment "
        "at its first matching set. Index change with it: (experiment_id, name, num_value, "
        "set_index) and (experiment_id, name, text_value, set_index) in place of (name, "
        "num_value) and (name, text_value), so a clause is one index range per experiment and "
        "a same-set check one covering lookup. The indexes alone do little for the current "
        "query: the rewrite is what counts on SQLite. The what-if below measures all three.",
    ),
    (
        r'IN \(SELECT "pv0"\."experiment_id" FROM "parameter_value"',
        "pg",
        "PostgreSQL already runs the IN as a semi join per experiment, but through "
        "parameter_value_experiment_id: for every visible experiment it reads all of its "
        "values to keep those of the first clause (Rows Removed by Filter) and hashes the "
        "second clause's values, so the COUNT grows with visible experiments x sets. Index "
        "change: (experiment_id, name, num_value, set_index) and (experiment_id, name, "
        "text_value, set_index), measured below with the current query and with the "
        "correlated EXISTS that SQLite needs. What is left stays proportional to the visible "
        "experiments (the admin's COUNT); a per-experiment, per-parameter summary (min/max "
        "number, distinct texts) would let the COUNT skip experiments that cannot match.",
    ),
    (
        r'FROM "parameter_value" AS "pv0" WHERE \(+"pv0"\."experiment_id" = "t1"\."id"',
        None,
        "The filter is already an EXISTS per experiment. Its COUNT still visits every "
        "visible experiment, and in one whose values match the first clause but never "
        "together with the second, every matching set: the cost grows with the visible "
        "experiments x their matching sets, whatever the page size (the page itself stops "
        "after `limit` matches). Further fix, not an index: keep per experiment and parameter "
        "its min/max number and its distinct texts (written at create/update, a few rows per "
        "experiment) and test those first, so that experiments that cannot match are skipped "
        "without reading their sets; or stop counting past a bound and return the total as "
        "'at least N'. (On PostgreSQL pv0 is read through parameter_value_experiment_id with a "
        "filter, because a numeric clause is an OR of a numeric and a text comparison; "
        "splitting it into two EXISTS does use (experiment_id, name, num_value, set_index) "
        "but was slower in a trial at 300,000 tasks.)",
    ),
    (
        r'FROM "task_attempt" AS "t1" WHERE \("t1"\."state" IN',
        None,
        "Filters on task_attempt.state alone, but the only index with state is (cluster, "
        "state): the whole index is read (every attempt ever made) to find the few thousand "
        "active ones. Index change: (state, cluster) in place of (cluster, state); the poll's "
        "`cluster = ? AND state IN (...)` is served as well by it (measured below).",
    ),
]

# Slow operations whose time is mostly outside SQL, recognised by their label.
NOTES: list[tuple[str, str]] = [
    (
        r"^GET /experiments(\?|/search)",
        "Every experiment of the page carries its whole `parameters` JSON (about 55 KiB at "
        "1,000 sets), which JSONField decodes and the handler encodes again: the answer is MiBs "
        "and most of the time is Python, not SQL. Fix: leave `parameters` out of list and "
        "search answers (the spec's Experiment does not require it; GET /experiments/{id} "
        "still returns it), i.e. select every column but `parameters`; or pass the stored JSON "
        "text through without json.loads + json.dumps. Measured in the what-if below.",
    ),
    (
        r"^_poll",
        "The SQL uses (cluster, state) and is quick; the rest is peewee building one "
        "TaskAttempt and one Task object per active attempt. Selecting only the columns the "
        "poll reads, as tuples, would cut most of it; not an index matter.",
    ),
]


def advice(sql: str, pg: bool) -> list[str]:
    kind = "pg" if pg else "sqlite"
    return [
        text
        for pattern, where, text in ADVICE
        if where in (None, kind) and re.search(pattern, sql, re.S)
    ]


def note(label: str) -> list[str]:
    return [text for pattern, text in NOTES if re.search(pattern, label)]


def correlated_filter(text: str) -> peewee.Expression:
    """``search.matching_experiments`` with the same clauses, correlated per experiment."""
    clauses = parse_filter(text)
    first = ParameterValue.alias("pv0")
    query = first.select(peewee.SQL("1")).where(
        (first.experiment == Experiment.id) & _clause_condition(first, clauses[0])
    )
    for number, clause in enumerate(clauses[1:], start=1):
        other = ParameterValue.alias(f"pv{number}")
        same_set = (other.experiment == first.experiment) & (other.set_index == first.set_index)
        query = query.where(
            peewee.fn.EXISTS(
                other.select(peewee.SQL("1")).where(same_set & _clause_condition(other, clause))
            )
        )
    return peewee.fn.EXISTS(query)


def list_without_parameters(principal: Principal) -> dict[str, Any]:
    """``list_experiments(limit=100)`` selecting every column but ``parameters``."""
    where = experiments.visible(principal)
    columns = [f for f in Experiment._meta.sorted_fields if f.name != "parameters"]
    total = Experiment.select().where(where).count()
    rows = (
        Experiment.select(*columns)
        .where(where)
        .order_by(Experiment.created_at.desc(), Experiment.id.desc())
        .limit(100)
    )
    answers = []
    for row in rows:
        body = experiments.to_json(row)
        del body["parameters"]
        answers.append(body)
    return {"experiments": answers, "total": total, "limit": 100, "offset": 0}


# ---------------------------------------------------------------------------------------------
# One database


@dataclass
class Row:
    label: str
    who: str
    n: int = 0
    p50: float = float("nan")
    p99: float = float("nan")
    size: int = 0
    answer: str = ""
    inproc: float = float("nan")
    sql_ms: float = 0.0
    statements: int = 0
    dumps_ms: float = float("nan")
    error: str = ""
    body: Any = None  # the in-process answer, to compare what-ifs with


def fetch(server: bench_api.ServerProcess, path: str, token: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    try:
        connection.request("GET", API + path, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def measure_http(
    server: bench_api.ServerProcess,
    seeded: Seeded,
    principals: dict[str, Principal],
    tokens: dict[str, str],
    options: argparse.Namespace,
) -> list[Row]:
    rows = []
    for endpoint in endpoints(seeded):
        for who in principals:
            row = Row(endpoint.label, who)
            rows.append(row)
            status, body = fetch(server, endpoint.path, tokens[who])  # also the warm-up
            if status != 200:
                row.error = f"{status} {body[:200]!r}"
                continue
            row.size = len(body)
            row.answer = endpoint.answer(json.loads(body))
            phase = bench_api.Phase(
                endpoint.label,
                bench_api.raw_request("GET", API + endpoint.path, tokens[who]),
                200,
                1,
            )
            result = bench_api.measure(server, phase, 0.0, options.budget, options.requests)
            row.n, row.p50, row.p99 = result.requests, result.percentile(50), result.percentile(99)
            if result.errors:
                row.error = f"{result.errors} unexpected answers: {result.first_error}"
            print(f"  measured {endpoint.label} ({who}): {row.n} requests", flush=True)
    return rows


def analyse_in_process(
    db: peewee.Database, seeded: Seeded, principals: dict[str, Principal], rows: list[Row]
) -> list[Statement]:
    """Each endpoint's service function again, its statements re-run one by one."""
    by_key = {(row.label, row.who): row for row in rows}
    statements = []
    for endpoint in endpoints(seeded):
        for who, principal in principals.items():
            row = by_key[(endpoint.label, who)]
            if row.error:
                continue
            with sql_log() as captured:
                endpoint.call(principal)
            times, body = repeat(lambda e=endpoint, p=principal: e.call(p), 3, 5.0)
            row.inproc, row.body = statistics.median(times), body
            dumps, _ = repeat(lambda b=body: compact(b), 3, 2.0)
            row.dumps_ms = statistics.median(dumps)
            row.statements = len(captured)
            for sql, params in captured:
                statement = time_statement(db, sql, params, f"{endpoint.label} ({who})")
                row.sql_ms += statement.ms
                statements.append(statement)
    return statements


@dataclass
class EngineResult:
    label: str
    rows: int
    times: list[float]
    sql_ms: float
    statements: int


def analyse_engine(db: peewee.Database, runs: int) -> tuple[list[EngineResult], list[Statement]]:
    results, statements = [], []
    for label, fn in engine_queries():
        with sql_log() as captured:
            fn()
        times, rows = repeat(fn, runs, 5.0)
        timed = [time_statement(db, sql, params, f"engine {label}") for sql, params in captured]
        statements += timed
        results.append(EngineResult(label, rows, times, sum(s.ms for s in timed), len(timed)))
    return results, statements


def print_engine(results: list[EngineResult]) -> None:
    print(f"  {'query':<46} {'rows':>7} {'p50 ms':>8} {'p99 ms':>8} {'SQL ms':>7} {'stmts':>5}")
    for r in results:
        print(
            f"  {r.label:<46} {r.rows:>7,} {statistics.median(r.times):>8.2f} "
            f"{percentile(r.times, 99):>8.2f} {r.sql_ms:>7.2f} {r.statements:>5}"
        )


def print_http(rows: list[Row]) -> None:
    header = (
        f"  {'endpoint':<54} {'who':<5} {'n':>3} {'p50 ms':>8} {'p99 ms':>8} {'KiB':>7} "
        f"{'in-proc':>8} {'SQL ms':>7} {'stmts':>5} {'dumps':>6}  answer"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in rows:
        if r.error and not r.n:
            print(f"  {r.label:<54} {r.who:<5} !! {r.error}")
            continue
        print(
            f"  {r.label:<54} {r.who:<5} {r.n:>3} {r.p50:>8.1f} {r.p99:>8.1f} "
            f"{r.size / 1024:>7.1f} {r.inproc:>8.1f} {r.sql_ms:>7.1f} {r.statements:>5} "
            f"{r.dumps_ms:>6.1f}  {r.answer}"
        )
        if r.error:
            print(f"    !! {r.error}")


def print_slow(
    db: peewee.Database, statements: list[Statement], slow_ms: float, mostly_sql: set[str]
) -> None:
    """Plans of the statements of ``slow_ms`` or more, and of those of a fifth of that within
    an operation that is slow because of its SQL."""
    pg = isinstance(db, peewee.PostgresqlDatabase)
    seen: dict[str, list[Statement]] = {}
    for statement in statements:
        part = statement.where in mostly_sql and statement.ms >= slow_ms / 5
        if statement.ms >= slow_ms or part:
            seen.setdefault(f"{statement.sql}|{statement.params}", []).append(statement)
    if not seen:
        print(f"\n  no statement took {slow_ms:g} ms or more")
        return
    print(
        f"\n  statements of {slow_ms:g} ms or more, or of {slow_ms / 5:g} ms or more in a slow "
        "operation (median of up to 5 runs), with their plan"
    )
    for number, group in enumerate(seen.values(), start=1):
        first = group[0]
        whos = "; ".join(s.where for s in group)
        print(f"\n  [{number}] {first.ms:.1f} ms, {first.rows:,} rows; run by: {whos}")
        print(textwrap.fill(first.sql, 98, initial_indent="    ", subsequent_indent="      "))
        params = repr(first.params)
        print(f"    params: {params if len(params) < 200 else params[:200] + ' ...'}")
        plan = explain(db, first.sql, first.params)
        label = "EXPLAIN ANALYZE" if pg else "EXPLAIN QUERY PLAN"
        print(f"    {label}:")
        for line in plan[:40]:
            print(f"      {line}")
        if len(plan) > 40:
            print(f"      ... {len(plan) - 40} more lines")
        print(f"    -> {plan_findings(plan, pg)}")
        for text in advice(first.sql, pg):
            print(textwrap.fill(text, 98, initial_indent="    fix: ", subsequent_indent="      "))


def print_slow_operations(rows: list[Row], engine: list[EngineResult], slow_ms: float) -> set[str]:
    """Where the time of each slow operation goes; returns the mostly-SQL ones (as
    ``Statement.where`` names them), whose statements are then explained even if quicker."""
    slow = [
        (f"{r.label} ({r.who}): {r.p50:.0f} ms over HTTP; in process {r.inproc:.0f} ms",
         f"{r.label} ({r.who})",
         r.inproc, r.sql_ms, r.statements, f"; json.dumps {r.dumps_ms:.0f} ms; answer "
         f"{r.size / 1024:,.0f} KiB")
        for r in rows
        if r.p50 >= slow_ms
    ] + [
        (f"engine {e.label}: {statistics.median(e.times):.0f} ms in process", f"engine {e.label}",
         statistics.median(e.times), e.sql_ms, e.statements, f"; {e.rows:,} rows")
        for e in engine
        if statistics.median(e.times) >= slow_ms
    ]  # fmt: skip
    if not slow:
        print(f"\n  no operation took {slow_ms:g} ms or more (p50)")
        return set()
    print(f"\n  operations of {slow_ms:g} ms or more (p50): where the time goes")
    printed: dict[str, int] = {}
    mostly_sql = set()
    for head, where, total, sql_ms, count, tail in slow:
        print(f"    {head}, of which SQL {sql_ms:.0f} ms ({count} statements){tail}")
        if sql_ms >= 0.5 * total:
            print("      mostly SQL: see its statements below")
            mostly_sql.add(where)
            continue
        for text in note(where.removeprefix("engine ")):
            if text in printed:
                print(f"      mostly outside SQL: see note ({printed[text]}) above")
                continue
            printed[text] = len(printed) + 1
            print(
                textwrap.fill(
                    f"({printed[text]}) {text}",
                    98,
                    initial_indent="      ",
                    subsequent_indent="      ",
                )
            )
    return mostly_sql


@contextmanager
def interrupted_after(db: peewee.Database, seconds: float) -> Iterator[Callable[[], bool]]:
    """On SQLite, abort a statement still running after ``seconds`` (PostgreSQL: a
    ``statement_timeout``); yields whether that happened."""
    happened = [False]
    deadline = time.perf_counter() + seconds
    pg = isinstance(db, peewee.PostgresqlDatabase)
    if pg:
        db.execute_sql(f"SET statement_timeout = {int(seconds * 1000)}")
    else:

        def check() -> int:
            happened[0] = happened[0] or time.perf_counter() > deadline
            return int(happened[0])

        db.connection().set_progress_handler(check, 100_000)
    try:
        yield lambda: happened[0]
    except peewee.OperationalError as exc:  # "interrupted" / "canceling statement due to ..."
        if "interrupted" not in str(exc) and "statement timeout" not in str(exc):
            raise
        happened[0] = True
    finally:
        if pg:
            db.execute_sql("SET statement_timeout = 0")
        else:
            db.connection().set_progress_handler(None, 0)


@contextmanager
def extra_indexes(db: peewee.Database, table: str, indexes: dict[str, str]) -> Iterator[float]:
    """Indexes made in the benchmark's database for a what-if, dropped afterwards."""
    clock = time.perf_counter()
    for name, columns in indexes.items():
        db.execute_sql(f'CREATE INDEX "{name}" ON "{table}" ({columns})')
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql(f'ANALYZE "{table}"')
    try:
        yield time.perf_counter() - clock
    finally:
        for name in indexes:
            db.execute_sql(f'DROP INDEX "{name}"')


def what_if(
    db: peewee.Database,
    seeded: Seeded,
    principals: dict[str, Principal],
    rows: list[Row],
    engine: list[EngineResult],
    slow_ms: float,
) -> None:
    """The fixes proposed above, measured in process on this database for the operations that
    were slow in this run (the package is not changed; indexes are made in the benchmark's
    database and dropped again)."""
    slow = {row.label for row in rows if row.p50 >= slow_ms}
    slow |= {e.label for e in engine if statistics.median(e.times) >= slow_ms}
    cases = [
        ("GET /experiments?limit=100", what_if_list),
        (f"GET /experiments/search {PARAMETER_FILTER}", what_if_search),
        ("health(): active attempts, all clusters", what_if_attempt_index),
        ("reconcile(): clusters with active attempts", what_if_attempt_index),
    ]
    chosen = []
    for label, case in cases:
        if label in slow and case not in chosen:
            chosen.append(case)
    if not chosen:
        print(f"\n  what-ifs: none, no operation they address took {slow_ms:g} ms or more")
        return
    print("\n  what-ifs, in process (median of 3; the same answers are checked)")
    for case in chosen:
        case(db, principals, rows)


def what_if_list(db: peewee.Database, principals: dict[str, Principal], rows: list[Row]) -> None:
    label = "GET /experiments?limit=100"
    page = next((row.body for row in rows if row.label == label and row.body), None)
    if not page or not page["experiments"] or "parameters" not in page["experiments"][0]:
        print(f"    {label}: the package's list already leaves out `parameters`; no what-if")
        return
    for who, principal in principals.items():
        before, body = repeat(
            lambda p=principal: compact(experiments.list_experiments(p, {"limit": "100"})),
            3,
            10.0,
        )
        after, slim = repeat(lambda p=principal: compact(list_without_parameters(p)), 3, 10.0)
        print(
            f"    {label} ({who}) with json.dumps: {statistics.median(before):.0f} ms, "
            f"{len(body) / 1024:,.0f} KiB -> without `parameters`: "
            f"{statistics.median(after):.1f} ms, {len(slim) / 1024:,.0f} KiB"
        )


def what_if_search(db: peewee.Database, principals: dict[str, Principal], rows: list[Row]) -> None:
    pg = isinstance(db, peewee.PostgresqlDatabase)
    by_key = {(row.label, row.who): row for row in rows}
    label = f"GET /experiments/search {PARAMETER_FILTER}"
    current, _ = (
        Experiment.select(Experiment.id)
        .where(matching_experiments(parse_filter(PARAMETER_FILTER)))
        .sql()
    )
    if '"pv0"."experiment_id" = "t1"."id"' in current:
        print(
            f"    {label}: the package already correlates the filter per experiment; "
            "no what-if for it"
        )
        return
    order = [Experiment.created_at.desc(), Experiment.id.desc()]
    indexes = {
        "whatif_pv_exp_name_num": "experiment_id, name, num_value, set_index",
        "whatif_pv_exp_name_text": "experiment_id, name, text_value, set_index",
    }

    def rewritten(principal: Principal) -> dict[str, Any]:
        where = [experiments.visible(principal), correlated_filter(PARAMETER_FILTER)]
        return experiments._page(where, order, 20, 0)

    def measure_search(title: str) -> None:
        for who, principal in principals.items():
            row = by_key[(label, who)]
            times, body = repeat(lambda p=principal: rewritten(p), 3, 10.0)
            same = "same answer" if body == row.body else "!! different answer"
            print(
                f"    {label} ({who}): {row.inproc:.0f} ms -> {title}: "
                f"{statistics.median(times):.1f} ms ({same}, total {body['total']})"
            )

    measure_search("correlated EXISTS")
    with extra_indexes(db, "parameter_value", indexes) as seconds:
        measure_search("correlated EXISTS + 2 indexes")
        for who, principal in principals.items():
            row = by_key[(label, who)]
            with interrupted_after(db, 10.0) as stopped:
                times, body = repeat(
                    lambda p=principal: experiments.search(
                        p, {"parameter_filter": PARAMETER_FILTER}
                    ),
                    3,
                    10.0,
                )
            if stopped():
                print(
                    f"    {label} ({who}): {row.inproc:.0f} ms -> current query + 2 indexes: "
                    "interrupted after 10 s (the planner drives it from the new indexes)"
                )
                continue
            same = "same answer" if body == row.body else "!! different answer"
            print(
                f"    {label} ({who}): {row.inproc:.0f} ms -> current query + 2 indexes: "
                f"{statistics.median(times):.1f} ms ({same}, total {body['total']})"
            )
        query = Experiment.select().where(
            experiments.visible(principals["admin"]) & correlated_filter(PARAMETER_FILTER)
        )
        sql, params = query.sql()
        plan = explain(db, f"SELECT COUNT(1) FROM ({sql}) AS w", tuple(params))
    print(
        f"      indexes: {'; '.join(f'{n} ({c})' for n, c in indexes.items())}, made in "
        f"{seconds:.1f} s; plan of the admin's COUNT with them:"
    )
    for line in plan[:24]:
        print(f"        {line}")
    print(f"      -> {plan_findings(plan, pg)}")


def what_if_attempt_index(
    db: peewee.Database, principals: dict[str, Principal], rows: list[Row]
) -> None:
    engine = dict(engine_queries())
    wanted = [name for name in engine if name.startswith(("health()", "reconcile()", "_poll"))]
    before = {name: statistics.median(repeat(engine[name], 5, 5.0)[0]) for name in wanted}
    state_first = {"whatif_task_attempt_state_cluster": "state, cluster"}
    with extra_indexes(db, "task_attempt", state_first) as seconds:
        after = {name: statistics.median(repeat(engine[name], 5, 5.0)[0]) for name in wanted}
    print(f"    task_attempt index (state, cluster), made in {seconds:.1f} s:")
    for name in wanted:
        print(f"      {name}: {before[name]:.1f} ms -> {after[name]:.1f} ms")


def run_database(
    kind: str, url: str, options: argparse.Namespace, path: Path | None = None
) -> None:
    shape = make_shape(options.tasks, options.experiments)
    context = prepare(Settings(port=0, database_url=url))
    db = database.obj
    seeded = seed(db, shape, options.sqlite_analyze)
    print(
        f"  seeded {shape.experiments:,} experiments x {shape.sets:,} parameter sets = "
        f"{shape.tasks:,} tasks in {seeded.seconds:.1f} s; {database_size(db, path)} on disk"
    )
    for note in seeded.notes:
        print(f"    {note}")
    print(f"  {table_counts(db)}")
    print(
        f"  measured experiment: {seeded.target.name} ({seeded.target_id}), "
        f"{seeded.target.status}, owner {seeded.user}; task {seeded.task_id}"
    )

    principals = {"admin": Principal(ADMIN, True), "user": Principal(seeded.user, False)}
    tokens = {
        who: auth.create_token(context.jwt_secret, p.username, p.is_admin, timedelta(hours=4))
        for who, p in principals.items()
    }
    with bench_api.running_server(url) as server:
        print(f"  server pid {server.process.pid}, port {server.port}", flush=True)
        rows = measure_http(server, seeded, principals, tokens, options)
    statements = analyse_in_process(db, seeded, principals, rows)
    engine, engine_statements = analyse_engine(db, options.engine_runs)

    print(
        f"\n  {kind}: HTTP, sequential on one keep-alive connection (p50/p99 of n requests); "
        "in process: the service function (median of 3), its statements re-run (sum of "
        "medians) and json.dumps of its answer, all in ms"
    )
    print_http(rows)
    print(f"\n  {kind}: engine queries, in process (median / p99 of {options.engine_runs})")
    print_engine(engine)
    mostly_sql = print_slow_operations(rows, engine, options.slow_ms)
    print_slow(db, statements + engine_statements, options.slow_ms, mostly_sql)
    what_if(db, seeded, principals, rows, engine, options.slow_ms)
    database.close()


@contextmanager
def sqlite_database() -> Iterator[tuple[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory:
        path = Path(directory) / "scale.db"
        yield f"sqlite:///{path}", path


def source_version() -> str:
    """The commit of the tree measured, with its package's uncommitted changes if any."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "airavata_hpc"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}" + (f" + {len(changed)} changed files in airavata_hpc" if changed else "")


def postgres_version(url: str) -> str:
    try:
        connection = connect(url)
        (version,) = connection.execute_sql("SHOW server_version").fetchone()
        connection.close()
        return f"PostgreSQL {version}"
    except peewee.OperationalError:
        return "PostgreSQL unreachable"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks (default 1,000,000)")
    parser.add_argument(
        "--experiments", type=int, default=1000, help="experiments they belong to (default 1,000)"
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--requests", type=int, default=50, help="sequential requests per endpoint (default 50)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="at most this many seconds of requests per endpoint and user (default 20)",
    )
    parser.add_argument(
        "--engine-runs", type=int, default=20, help="runs of each engine query (default 20)"
    )
    parser.add_argument(
        "--slow-ms", type=float, default=50.0, help="explain statements this slow (default 50)"
    )
    parser.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help="run ANALYZE on SQLite after seeding (the service does not)",
    )
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--schema", default=DEFAULT_SCHEMA)
    options = parser.parse_args(argv)
    if options.tasks < 1 or options.experiments < 1 or options.requests < 1:
        parser.error("--tasks, --experiments and --requests must be at least 1")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    shape = make_shape(options.tasks, options.experiments)
    print(
        "airavata-hpc scale benchmark (prints figures; the exit status never depends on them)\n"
        f"  python {platform.python_version()}, tornado {tornado.version}, peewee "
        f"{peewee.__version__}, SQLite {peewee.sqlite3.sqlite_version}, "
        f"{postgres_version(options.postgres_url)}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n"
        f"  data: {shape.experiments:,} experiments x {shape.sets:,} sets = {shape.tasks:,} "
        f"tasks; owners {', '.join(USERS)} (round-robin), admin {ADMIN};\n"
        f"        {shape.running} RUNNING experiments (tasks QUEUED/RUNNING on {ACTIVE_CLUSTER}"
        f"), {API_CREATED} CREATED, 1 in 7 of the rest FAILED, the others COMPLETED\n"
        f"  search: parameter_filter={PARAMETER_FILTER!r}; tags={TAGS_QUERY} sort_by=name\n"
        f"  source: git {source_version()} (the server process imports it again when it starts)"
    )
    kinds = ["sqlite", "postgresql"] if options.database == "both" else [options.database]
    for kind in kinds:
        if kind == "sqlite":
            print("\nSQLite (temporary file, WAL)", flush=True)
            with sqlite_database() as (url, path):
                run_database("SQLite", url, options, path)
        else:
            print(f"\nPostgreSQL ({options.postgres_url}, schema {options.schema})", flush=True)
            try:
                with bench_api.postgres_url(options.postgres_url, options.schema) as (url, _):
                    run_database("PostgreSQL", url, options)
            except peewee.OperationalError as exc:
                print(f"  skipped: cannot use PostgreSQL: {exc}")
    print(
        f"\nsource at the end: git {source_version()}; load average after: "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
