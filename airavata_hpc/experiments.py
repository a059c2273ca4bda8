"""Experiments as the API sees them: create, read, list, search, update, delete, submit, cancel.

This module owns the rules; the web handlers only parse requests and call these functions. Each
parameter set becomes one task when the experiment is created, with its command rendered from
``command_template`` (placeholders ``{{ name }}``, values shell-quoted in a sandbox), so a
missing placeholder is a 400 at creation rather than a failure on a cluster hours later.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import peewee

from airavata_hpc import command_template, events
from airavata_hpc.auth import Principal
from airavata_hpc.db import bulk_insert, database, is_postgres
from airavata_hpc.errors import (
    ApiError,
    bad_request,
    conflict,
    format_time,
    not_found,
    validation_error,
)
from airavata_hpc.models import (
    Experiment,
    ExperimentTag,
    ParameterValue,
    Task,
    TaskAttempt,
    new_id,
    utcnow,
)
from airavata_hpc.search import as_number, matching_experiments, parse_filter
from airavata_hpc.spec import parse_datetime, validate
from airavata_hpc.states import (
    ExperimentStatus,
    IllegalTransition,
    TaskStatus,
    check_experiment_transition,
)

log = logging.getLogger(__name__)

MAX_LIMIT = 100
# Both databases store integers in 64 bits; a larger offset could only ever be a mistake.
MAX_OFFSET = 2**63 - 1
SORT_FIELDS = {
    "created_at": Experiment.created_at,
    "updated_at": Experiment.updated_at,
    "name": Experiment.name,
    "status": Experiment.status,
}
# Fields that define what runs; they may change only before the experiment is submitted.
EXECUTION_FIELDS = (
    "command_template",
    "output_pattern",
    "parameters",
    "compute_requirements",
    "data_requirements",
    "allowed_compute_resources",
    "denied_compute_resources",
    "allowed_compute_types",
    "cost_weights",
    "deadline",
)
JSON_FIELDS = (
    "compute_requirements",
    "data_requirements",
    "allowed_compute_resources",
    "denied_compute_resources",
    "allowed_compute_types",
    "cost_weights",
    "metadata",
)


# ---------------------------------------------------------------------------------------------
# Reading


def to_json(experiment: Experiment, with_parameters: bool = True) -> dict[str, Any]:
    """The spec's ``Experiment`` body; optional fields that are unset are left out.

    Lists leave out ``parameters`` (optional in the spec): a page of 100 sweeps of 1,000 sets
    each would be megabytes; ``GET /experiments/{id}`` has them. List items carry
    ``execution_summary`` (task counts by status) instead.
    """
    body: dict[str, Any] = {
        "id": experiment.id,
        "name": experiment.name,
        "project_id": experiment.project_id,
        "owner_id": experiment.owner_id,
        "status": experiment.status,
        "command_template": experiment.command_template,
        "created_at": format_time(experiment.created_at),
        "updated_at": format_time(experiment.updated_at),
    }
    if with_parameters:
        body["parameters"] = experiment.parameters or []
    if experiment.description is not None:
        body["description"] = experiment.description
    if experiment.output_pattern is not None:
        body["output_pattern"] = experiment.output_pattern
    if experiment.deadline is not None:
        body["deadline"] = format_time(experiment.deadline)
    for name in JSON_FIELDS:
        value = getattr(experiment, name)
        if value is not None:
            body[name] = value
    return body


def visible(principal: Principal) -> peewee.Expression:
    """Owner scoping: users see their own experiments, admins see all."""
    if principal.is_admin:
        return peewee.SQL("1 = 1")
    return Experiment.owner_id == principal.username


def get(principal: Principal, experiment_id: str) -> Experiment:
    """The experiment, or a 404 when it does not exist or belongs to someone else."""
    # A primary-key lookup, then the owner check in Python: the same answer as filtering on
    # owner_id in SQL, and the database always plans it as the cheapest query there is.
    experiment = Experiment.get_or_none(Experiment.id == experiment_id)
    if experiment is None or not (principal.is_admin or experiment.owner_id == principal.username):
        raise not_found("experiment", experiment_id)
    return experiment


def parse_paging(limit: str | None, offset: str | None) -> tuple[int, int]:
    return (
        int_argument("limit", limit, default=20, low=1, high=MAX_LIMIT),
        int_argument("offset", offset, default=0, low=0, high=MAX_OFFSET),
    )


def int_argument(name: str, raw: str | None, default: int, low: int, high: int | None) -> int:
    """A query argument as an integer in [low, high]; a 400 naming the argument otherwise."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer", field=name) from None
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise bad_request(f"{name} must be at least {low}{upper}", field=name)
    return value


def _status_filter(raw: str | None) -> str | None:
    if raw is None:
        return None
    if raw not in ExperimentStatus.__members__:
        raise bad_request("status must be one of " + ", ".join(ExperimentStatus), field="status")
    return raw


def list_experiments(principal: Principal, args: dict[str, str | None]) -> dict[str, Any]:
    """``GET /experiments``: filter by project, owner and status, newest first."""
    limit, offset = parse_paging(args.get("limit"), args.get("offset"))
    where = [visible(principal)]
    if args.get("project_id") is not None:
        where.append(Experiment.project_id == args["project_id"])
    if args.get("owner_id") is not None:
        where.append(Experiment.owner_id == args["owner_id"])
    status = _status_filter(args.get("status"))
    if status:
        where.append(Experiment.status == status)
    order = [Experiment.created_at.desc(), Experiment.id.desc()]
    return _page(where, order, limit, offset)


def search(principal: Principal, args: dict[str, str | None]) -> dict[str, Any]:
    """``GET /experiments/search``: the list filters plus parameters, dates, tags and sorting."""
    limit, offset = parse_paging(args.get("limit"), args.get("offset"))
    where = [visible(principal)]
    if args.get("project_id") is not None:
        where.append(Experiment.project_id == args["project_id"])
    if args.get("owner_id") is not None:
        where.append(Experiment.owner_id == args["owner_id"])
    status = _status_filter(args.get("status"))
    if status:
        where.append(Experiment.status == status)

    for name, op in (("created_after", ">="), ("created_before", "<=")):
        raw = args.get(name)
        if raw is None:
            continue
        moment = _naive_utc(_parse_time_arg(name, raw))
        where.append(
            Experiment.created_at >= moment if op == ">=" else Experiment.created_at <= moment
        )

    if args.get("parameter_filter"):
        where.append(matching_experiments(parse_filter(args["parameter_filter"])))

    if args.get("tags"):
        tags = sorted({tag.strip() for tag in args["tags"].split(",") if tag.strip()})
        if tags:
            tagged = (
                ExperimentTag.select(ExperimentTag.experiment)
                .where(ExperimentTag.tag.in_(tags))
                .group_by(ExperimentTag.experiment)
                .having(peewee.fn.COUNT(ExperimentTag.tag) == len(tags))
            )
            where.append(Experiment.id.in_(tagged))

    sort_by = args.get("sort_by") or "created_at"
    if sort_by not in SORT_FIELDS:
        raise bad_request("sort_by must be one of " + ", ".join(SORT_FIELDS), field="sort_by")
    order_name = args.get("order") or "desc"
    if order_name not in ("asc", "desc"):
        raise bad_request("order must be asc or desc", field="order")
    column = SORT_FIELDS[sort_by]
    order = (
        [column.asc(), Experiment.id.asc()]
        if order_name == "asc"
        else [column.desc(), Experiment.id.desc()]
    )
    return _page(where, order, limit, offset)


def _parse_time_arg(name: str, raw: str) -> datetime:
    try:
        return parse_datetime(raw)
    except ValueError:
        raise bad_request(
            f"{name} must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z", field=name
        ) from None


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _page(
    where: list[peewee.Expression], order: list[Any], limit: int, offset: int
) -> dict[str, Any]:
    condition = where[0]
    for extra in where[1:]:
        condition = condition & extra
    total = Experiment.select().where(condition).count()
    columns = [field for field in Experiment._meta.sorted_fields if field.name != "parameters"]
    rows = list(
        Experiment.select(*columns).where(condition).order_by(*order).limit(limit).offset(offset)
    )
    counts = _task_counts([row.id for row in rows])
    items = []
    for row in rows:
        item = to_json(row, with_parameters=False)
        by_status = counts.get(row.id, {})
        item["execution_summary"] = {"total_tasks": sum(by_status.values()), "by_status": by_status}
        items.append(item)
    return {
        "experiments": items,
        "total": total,
        "limit": limit,
        "offset": offset,
    }


def _task_counts(experiment_ids: list[str]) -> dict[str, dict[str, int]]:
    """Tasks per status for a page of experiments, in one grouped query."""
    counts: dict[str, dict[str, int]] = {}
    if experiment_ids:
        rows = (
            Task.select(Task.experiment, Task.status, peewee.fn.COUNT(Task.id))
            .where(Task.experiment.in_(experiment_ids))
            .group_by(Task.experiment, Task.status)
            .tuples()
        )
        for experiment_id, status, count in rows:
            counts.setdefault(experiment_id, {})[status] = count
    return counts


# ---------------------------------------------------------------------------------------------
# Writing


def create(principal: Principal, body: Any) -> Experiment:
    """``POST /experiments``: validate, then store the experiment, its values and its tasks."""
    validate(body, "CreateExperimentRequest")
    _check_semantics(body)
    parameter_sets = body.get("parameters") or []
    commands = _render_commands(body["command_template"], parameter_sets)

    with database.atomic():
        experiment = Experiment.create(
            name=body["name"],
            description=body.get("description"),
            project_id=body["project_id"],
            owner_id=principal.username,
            command_template=body["command_template"],
            output_pattern=body.get("output_pattern"),
            parameters=parameter_sets,
            deadline=_deadline(body),
            max_retries=_max_retries(body),
            **{name: body.get(name) for name in JSON_FIELDS},
        )
        _write_tags(experiment, body.get("metadata"))
        _write_values_and_tasks(experiment, parameter_sets, commands)
        events.record(
            experiment.id,
            "EXPERIMENT_CREATED",
            details={"task_count": len(commands), "owner_id": principal.username},
        )
    log.info(
        "experiment %s created by %s with %s tasks",
        experiment.id,
        principal.username,
        len(commands),
    )
    return experiment


def update(principal: Principal, experiment_id: str, body: Any) -> Experiment:
    """``PUT /experiments/{id}``: any field before submission; afterwards only the descriptive
    ones (name, description, metadata), since the others define work already sent out."""
    validate(body, "UpdateExperimentRequest")
    _check_semantics(body)

    with database.atomic():
        experiment = _locked(principal, experiment_id)
        touched = [name for name in EXECUTION_FIELDS if name in body]
        if touched and experiment.status != ExperimentStatus.CREATED:
            raise conflict(
                f"experiment is {experiment.status}: {', '.join(touched)} can change only "
                "before it is submitted; derive a new experiment instead",
                current_status=experiment.status,
                fields=touched,
            )

        for name in ("name", "description", "command_template", "output_pattern", *JSON_FIELDS):
            if name in body:
                setattr(experiment, name, body[name])
        if "parameters" in body:
            experiment.parameters = body["parameters"]
        if "deadline" in body:
            experiment.deadline = _deadline(body)
        if "compute_requirements" in body:
            experiment.max_retries = _max_retries(body)
        experiment.updated_at = utcnow()
        experiment.save()

        if "metadata" in body:
            ExperimentTag.delete().where(ExperimentTag.experiment == experiment).execute()
            _write_tags(experiment, body.get("metadata"))
        if "parameters" in body or "command_template" in body:
            commands = _render_commands(experiment.command_template, experiment.parameters)
            ParameterValue.delete().where(ParameterValue.experiment == experiment).execute()
            Task.delete().where(Task.experiment == experiment).execute()
            _write_values_and_tasks(experiment, experiment.parameters, commands)
    return experiment


def delete(principal: Principal, experiment_id: str) -> None:
    """``DELETE /experiments/{id}``: refused while jobs may still run (cancel first)."""
    with database.atomic():
        experiment = _locked(principal, experiment_id)
        if experiment.status in (ExperimentStatus.SUBMITTED, ExperimentStatus.RUNNING):
            raise conflict(
                f"experiment is {experiment.status}: cancel it before deleting it, so that no "
                "job is left running on a cluster",
                current_status=experiment.status,
            )
        experiment.delete_instance(recursive=False)
    log.info("experiment %s deleted by %s", experiment_id, principal.username)


def submit(principal: Principal, experiment_id: str) -> Experiment:
    """``POST /experiments/{id}/submit``: CREATED -> SUBMITTED, its tasks CREATED -> PENDING."""
    with database.atomic():
        experiment = _locked(principal, experiment_id)
        _transition(experiment, ExperimentStatus.SUBMITTED)
        Task.update(status=TaskStatus.PENDING, updated_at=utcnow()).where(
            (Task.experiment == experiment) & (Task.status == TaskStatus.CREATED)
        ).execute()
        events.record(experiment.id, "EXPERIMENT_SUBMITTED")
    log.info("experiment %s submitted by %s", experiment.id, principal.username)
    return experiment


def cancel(principal: Principal, experiment_id: str) -> Experiment:
    """``POST /experiments/{id}/cancel``: the experiment and its unfinished tasks go to
    CANCELLED at once; attempts that may have a job on a cluster are marked for the execution
    engine to cancel there. Cancelling an already cancelled experiment changes nothing."""
    with database.atomic():
        experiment = _locked(principal, experiment_id)
        if experiment.status == ExperimentStatus.CANCELLED:
            return experiment
        _transition(experiment, ExperimentStatus.CANCELLED)
        unfinished = [status.value for status in TaskStatus if not status.is_final]
        active = [status.value for status in TaskStatus if status.is_active]
        tasks = Task.select(Task.id).where(
            (Task.experiment == experiment) & Task.status.in_(active)
        )
        TaskAttempt.update(state="CANCEL_REQUESTED").where(
            TaskAttempt.task.in_(tasks) & TaskAttempt.state.in_(active)
        ).execute()
        now = utcnow()
        Task.update(status=TaskStatus.CANCELLED, completed_at=now, updated_at=now).where(
            (Task.experiment == experiment) & Task.status.in_(unfinished)
        ).execute()
        events.record(experiment.id, "EXPERIMENT_CANCELLED", details={"by": principal.username})
    log.info("experiment %s cancelled by %s", experiment.id, principal.username)
    return experiment


def _locked(principal: Principal, experiment_id: str) -> Experiment:
    """Read the experiment for a change; on PostgreSQL the row is locked until commit."""
    query = Experiment.select().where((Experiment.id == experiment_id) & visible(principal))
    if is_postgres():
        query = query.for_update()
    experiment = query.first()
    if experiment is None:
        raise not_found("experiment", experiment_id)
    return experiment


def _transition(experiment: Experiment, requested: ExperimentStatus) -> None:
    """Apply an API-requested status change; an illegal one is the spec's 400 "Invalid
    experiment state", naming both statuses."""
    try:
        check_experiment_transition(experiment.status, requested)
    except IllegalTransition as exc:
        raise ApiError(
            400,
            "invalid_state_transition",
            f"experiment is {exc.current} and cannot become {exc.requested}",
            {"current_status": exc.current, "requested_status": exc.requested},
        ) from None
    experiment.status = requested
    experiment.updated_at = utcnow()
    experiment.save()


def _check_semantics(body: dict[str, Any]) -> None:
    """Rules the schema cannot say: unique set ids, tags as strings, sane retry counts."""
    seen: set[str] = set()
    for index, parameter_set in enumerate(body.get("parameters") or []):
        if parameter_set["id"] in seen:
            raise validation_error(
                f"parameters[{index}].id", f"duplicate parameter set id {parameter_set['id']!r}"
            )
        seen.add(parameter_set["id"])

    tags = (body.get("metadata") or {}).get("tags")
    if tags is not None and (
        not isinstance(tags, list) or not all(isinstance(tag, str) and tag for tag in tags)
    ):
        raise validation_error("metadata.tags", "must be a list of non-empty strings")
    _max_retries(body)


def _max_retries(body: dict[str, Any]) -> int:
    """``compute_requirements.max_retries`` (0 to 10, default 0): how often a failed task is
    sent again."""
    value = (body.get("compute_requirements") or {}).get("max_retries", 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10:
        raise validation_error(
            "compute_requirements.max_retries", "must be an integer from 0 to 10"
        )
    return value


def _deadline(body: dict[str, Any]) -> datetime | None:
    raw = body.get("deadline")
    return _naive_utc(parse_datetime(raw)) if raw else None


def _render_commands(template: str, parameter_sets: list[dict[str, Any]]) -> list[str]:
    """One command per parameter set (one for an experiment without sets); 400 when a set
    lacks a placeholder's value or the template is not valid."""
    try:
        placeholders = command_template.template_placeholders(template)
    except command_template.TemplateError as exc:
        raise validation_error("command_template", str(exc)) from None

    sets = parameter_sets or [{"id": "default", "values": {}}]
    commands = []
    for index, parameter_set in enumerate(sets):
        missing = sorted(placeholders - parameter_set["values"].keys())
        if missing:
            raise ApiError(
                400,
                "validation_error",
                f"parameters[{index}] ({parameter_set['id']!r}) has no value for "
                f"placeholder(s) {', '.join(missing)} used in command_template",
                {"field": f"parameters[{index}].values", "missing": missing},
            )
        try:
            commands.append(command_template.render_command(template, parameter_set["values"]))
        except command_template.TemplateError as exc:
            raise validation_error("command_template", str(exc)) from None
    return commands


def _write_tags(experiment: Experiment, metadata: dict[str, Any] | None) -> None:
    tags = sorted(set((metadata or {}).get("tags") or []))
    if tags:
        ExperimentTag.insert_many(
            [{"experiment": experiment.id, "tag": tag} for tag in tags]
        ).execute()


def _write_values_and_tasks(
    experiment: Experiment, parameter_sets: list[dict[str, Any]], commands: list[str]
) -> None:
    values = [
        {
            "experiment": experiment.id,
            "set_index": index,
            "name": name,
            "text_value": text,
            "num_value": as_number(text),
        }
        for index, parameter_set in enumerate(parameter_sets)
        for name, text in parameter_set["values"].items()
    ]
    now = utcnow()
    set_ids = [parameter_set["id"] for parameter_set in parameter_sets] or ["default"]
    tasks = [
        {
            "id": new_id(),
            "experiment": experiment.id,
            "set_index": index,
            "parameter_set_id": set_id,
            "name": f"{experiment.name}:{set_id}"[:255],
            "command": command,
            "status": TaskStatus.CREATED.value,
            "max_retries": experiment.max_retries,
            "created_at": now,
            "updated_at": now,
        }
        for index, (set_id, command) in enumerate(zip(set_ids, commands, strict=True))
    ]
    bulk_insert(ParameterValue, values)
    bulk_insert(Task, tasks)


# ---------------------------------------------------------------------------------------------
# Deriving

TASK_FILTERS = {
    "all": None,
    "only_successful": [TaskStatus.COMPLETED.value],
    "only_failed": [TaskStatus.FAILED.value, TaskStatus.CANCELLED.value],
}


def derive(principal: Principal, experiment_id: str, body: Any) -> dict[str, Any]:
    """``POST /experiments/{id}/derive``: a new CREATED experiment from the source's parameter
    sets whose tasks pass ``task_filter``, with ``parameter_modifications`` applied to every
    set. Compute resources and data requirements are kept unless the options say otherwise."""
    validate(body, "DerivativeExperimentRequest")
    source = get(principal, experiment_id)
    task_filter = body.get("task_filter") or "all"
    options = body.get("options") or {}
    modifications = body.get("parameter_modifications") or {}

    statuses = TASK_FILTERS[task_filter]
    query = Task.select(Task.set_index).where(Task.experiment == source.id)
    if statuses is not None:
        query = query.where(Task.status.in_(statuses))
    chosen = sorted({row.set_index for row in query})
    source_sets = source.parameters or []
    sets = [
        {**source_sets[index], "values": {**source_sets[index]["values"], **modifications}}
        for index in chosen
        if index < len(source_sets)
    ]
    warnings = []
    if not source_sets and chosen:
        warnings.append("the source experiment has no parameter sets; its command runs once")
    if not chosen:
        raise validation_error(
            "task_filter", f"{task_filter!r} selects no task of experiment {source.id}"
        )
    unknown = sorted(set(modifications) - {name for s in source_sets for name in s["values"]})
    if unknown:
        warnings.append(
            "parameter_modifications adds parameter(s) the source did not have: "
            + ", ".join(unknown)
        )

    new_body: dict[str, Any] = {
        "name": body["new_experiment_name"],
        "project_id": source.project_id,
        "command_template": source.command_template,
        "parameters": sets,
        "metadata": {**(source.metadata or {}), "derived_from": source.id},
    }
    for name in ("description", "output_pattern", "cost_weights", "compute_requirements"):
        if getattr(source, name) is not None:
            new_body[name] = getattr(source, name)
    if options.get("preserve_compute_resources", True):
        for name in (
            "allowed_compute_resources",
            "denied_compute_resources",
            "allowed_compute_types",
        ):
            if getattr(source, name) is not None:
                new_body[name] = getattr(source, name)
    if options.get("preserve_data_requirements", True) and source.data_requirements is not None:
        new_body["data_requirements"] = source.data_requirements

    experiment = create(principal, new_body)
    return {
        "new_experiment_id": experiment.id,
        "task_count": len(sets) or 1,
        "validation": {"valid": True, "warnings": warnings, "errors": []},
    }
