"""peewee models: users and API keys, experiments, tasks and their attempts, clusters, events.

Choices that matter for speed at a million tasks:

* An experiment keeps its parameter sets as one JSON column, so reading an experiment is one
  primary-key lookup. The values are also written, one row per value, to
  :class:`ParameterValue`, which the search's ``parameter_filter`` queries in SQL.
* Tags are rows of :class:`ExperimentTag`, so ``tags=a,b`` is an indexed lookup.
* Tasks are indexed by (experiment, status) for progress counts and lists, and attempts by
  (cluster, state) for the monitor's "what is active on this cluster" question.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import peewee

from airavata_hpc.db import database


def utcnow() -> datetime:
    """Naive UTC now: both databases store it as is, and formatting adds the ``Z``."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    return str(uuid.uuid4())


class JSONField(peewee.TextField):
    """JSON kept as text, so the same schema works on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"))

    def python_value(self, value: str | None) -> Any:
        if value is None:
            return None
        return json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Setting(BaseModel):
    """Small key/value facts the service keeps: the schema version, the generated JWT secret."""

    key = peewee.CharField(primary_key=True, max_length=64)
    value = peewee.TextField()


class User(BaseModel):
    username = peewee.CharField(primary_key=True, max_length=128)
    is_admin = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)


class ApiKey(BaseModel):
    """An API key, stored as its SHA-256 digest; ``prefix`` lets an admin recognise it."""

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    user = peewee.ForeignKeyField(User, backref="api_keys", on_delete="CASCADE")
    key_hash = peewee.CharField(max_length=64, unique=True)
    prefix = peewee.CharField(max_length=16)
    created_at = peewee.DateTimeField(default=utcnow)
    revoked = peewee.BooleanField(default=False)


class ComputeResource(BaseModel):
    """A configured cluster as last loaded from ``clusters.d``, with its observed health."""

    name = peewee.CharField(primary_key=True, max_length=128)
    type = peewee.CharField(max_length=16)
    host = peewee.CharField(max_length=255, null=True)
    compute_types = JSONField(default=list)
    config = JSONField(default=dict)
    health = peewee.CharField(max_length=16, default="unknown")
    health_detail = peewee.TextField(null=True)
    updated_at = peewee.DateTimeField(default=utcnow)


class Experiment(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    name = peewee.CharField(max_length=255)
    description = peewee.TextField(null=True)
    project_id = peewee.CharField(max_length=255)
    owner_id = peewee.CharField(max_length=128)
    status = peewee.CharField(max_length=16, default="CREATED")
    command_template = peewee.TextField()
    output_pattern = peewee.TextField(null=True)
    parameters = JSONField(default=list)
    compute_requirements = JSONField(null=True)
    data_requirements = JSONField(null=True)
    allowed_compute_resources = JSONField(null=True)
    denied_compute_resources = JSONField(null=True)
    allowed_compute_types = JSONField(null=True)
    cost_weights = JSONField(null=True)
    deadline = peewee.DateTimeField(null=True)
    metadata = JSONField(null=True)
    max_retries = peewee.IntegerField(default=0)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("owner_id", "created_at"), False),
            (("owner_id", "status"), False),
            (("project_id", "created_at"), False),
            (("status",), False),
            (("created_at",), False),
            (("updated_at",), False),
            (("name",), False),
        )


class ExperimentTag(BaseModel):
    experiment = peewee.ForeignKeyField(Experiment, on_delete="CASCADE", backref="tag_rows")
    tag = peewee.CharField(max_length=255)

    class Meta:
        primary_key = peewee.CompositeKey("tag", "experiment")


class ParameterValue(BaseModel):
    """One value of one parameter set, for the search's ``parameter_filter``.

    ``num_value`` is set when the text parses as a finite number, so a clause with a number
    compares numerically and every other clause compares the text.
    """

    experiment = peewee.ForeignKeyField(Experiment, on_delete="CASCADE", backref="value_rows")
    set_index = peewee.IntegerField()
    name = peewee.CharField(max_length=255)
    text_value = peewee.TextField()
    num_value = peewee.DoubleField(null=True)

    class Meta:
        indexes = (
            (("experiment", "set_index"), False),
            (("experiment", "name", "num_value", "set_index"), False),
            (("experiment", "name", "text_value", "set_index"), False),
        )


class Task(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    experiment = peewee.ForeignKeyField(Experiment, on_delete="CASCADE", backref="tasks")
    set_index = peewee.IntegerField()
    parameter_set_id = peewee.CharField(max_length=255)
    name = peewee.CharField(max_length=255)
    command = peewee.TextField()
    output_path = peewee.TextField(null=True)
    status = peewee.CharField(max_length=16, default="CREATED")
    cluster = peewee.CharField(max_length=128, null=True)
    retry_count = peewee.IntegerField(default=0)
    max_retries = peewee.IntegerField(default=0)
    exit_code = peewee.IntegerField(null=True)
    error_message = peewee.TextField(null=True)
    duration_sec = peewee.DoubleField(null=True)
    cost = peewee.DoubleField(null=True)
    assigned_at = peewee.DateTimeField(null=True)
    started_at = peewee.DateTimeField(null=True)
    completed_at = peewee.DateTimeField(null=True)
    result_summary = JSONField(null=True)
    execution_metrics = JSONField(null=True)
    metadata = JSONField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("experiment", "status"), False),
            (("experiment", "set_index"), True),
            (("status",), False),
        )


class TaskAttempt(BaseModel):
    """One submission of a task to a cluster: recorded before the batch command runs.

    ``submission_id`` is shared by the tasks sent in one batch job (an array); the job's name
    carries it, so after a crash the service can find the job by name and never submit twice.
    """

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    task = peewee.ForeignKeyField(Task, on_delete="CASCADE", backref="attempts")
    number = peewee.IntegerField()
    cluster = peewee.CharField(max_length=128)
    submission_id = peewee.CharField(max_length=36)
    array_index = peewee.IntegerField(default=0)
    job_name = peewee.CharField(max_length=128)
    native_job_id = peewee.CharField(max_length=128, null=True)
    work_dir = peewee.TextField(null=True)
    state = peewee.CharField(max_length=16, default="ASSIGNED")
    host = peewee.CharField(max_length=255, null=True)
    exit_code = peewee.IntegerField(null=True)
    error = peewee.TextField(null=True)
    submitted_at = peewee.DateTimeField(default=utcnow)
    started_at = peewee.DateTimeField(null=True)
    completed_at = peewee.DateTimeField(null=True)
    missing_since = peewee.DateTimeField(null=True)
    submit_failures = peewee.IntegerField(default=0)

    class Meta:
        indexes = (
            (("task", "number"), True),
            (("cluster", "state"), False),
            (("submission_id",), False),
        )


class TimelineEvent(BaseModel):
    id = peewee.BigAutoField()
    experiment = peewee.ForeignKeyField(Experiment, on_delete="CASCADE", backref="events")
    task = peewee.ForeignKeyField(Task, null=True, on_delete="CASCADE")
    event_type = peewee.CharField(max_length=64)
    timestamp = peewee.DateTimeField(default=utcnow)
    worker_id = peewee.CharField(max_length=255, null=True)
    details = JSONField(null=True)

    class Meta:
        indexes = ((("experiment", "timestamp"), False),)


ALL_MODELS: list[type[BaseModel]] = [
    Setting,
    User,
    ApiKey,
    ComputeResource,
    Experiment,
    ExperimentTag,
    ParameterValue,
    Task,
    TaskAttempt,
    TimelineEvent,
]
