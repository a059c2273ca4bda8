"""The execution engine: places pending tasks on clusters, submits them as batch jobs, polls
the clusters, decides completion from each element's status file, retries, and cancels.

The database is the source of truth. Every step writes what it is about to do before doing it
(an attempt row exists before ``sbatch`` runs, and carries the job name the cluster will know
it by), so after a crash :meth:`Engine.reconcile` finds every job the service had submitted and
neither loses nor duplicates one.

One cycle, per cluster: cancel what users cancelled, submit what is pending (as job arrays),
then at most every ``poll_interval`` seconds run ONE status command for all its active jobs
plus ONE batched read of the status files of jobs that left the queue. A cluster that cannot
be reached only makes the cluster degraded: its tasks keep their state.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import peewee

from airavata_hpc import events, scripts
from airavata_hpc.adapters.base import BatchAdapter, BatchJob, JobElement, NativeJobStatus
from airavata_hpc.clusters import ClusterConfig, load_clusters
from airavata_hpc.db import database
from airavata_hpc.metrics import Metrics
from airavata_hpc.models import ComputeResource, Experiment, Task, TaskAttempt, utcnow
from airavata_hpc.placement import choose_cluster, explain_no_cluster
from airavata_hpc.remote import RemoteCommandError, runner_for_cluster
from airavata_hpc.settings import Settings
from airavata_hpc.states import ExperimentStatus, TaskStatus
from airavata_hpc.transitions import move_experiment, move_tasks, task_counts

log = logging.getLogger(__name__)

ACTIVE_ATTEMPT = ("QUEUED", "RUNNING")
VANISHED = "job vanished from the queue without an exit status"
STDOUT_TAIL_BYTES = 4096
STDERR_TAIL_LINES = 20
DEFAULT_WALLTIME = 3600


@dataclass
class ClusterRuntime:
    """A configured cluster with its adapter, its runner and what the engine knows of it."""

    config: ClusterConfig
    adapter: BatchAdapter
    runner: Any
    last_poll: float = 0.0
    health: str = "unknown"
    last_error: str | None = None
    last_poll_commands: int = 0
    commands: int = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def compute_types(self) -> tuple[str, ...]:
        return tuple(self.config.compute_types)

    async def run(
        self, kind: str, argv: list[str], metrics: Metrics | None, check: bool = True
    ) -> Any:
        """Every scheduler command goes through here, so it is counted and its failure
        recorded as the cluster's health, never as a task's."""
        self.commands += 1
        if metrics is not None:
            metrics.scheduler_commands.labels(self.name, kind).inc()
        try:
            result = await self.runner.run(argv, check=check)
        except RemoteCommandError as exc:
            if exc.transient:
                self.mark_unreachable(exc)
            raise
        self.health = "healthy"
        self.last_error = None
        return result

    def mark_unreachable(self, exc: Exception) -> None:
        if self.health != "degraded":
            log.warning("cluster %s degraded: %s", self.name, exc)
        self.health = "degraded"
        self.last_error = str(exc)


@dataclass
class CycleStats:
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


class Engine:
    def __init__(
        self,
        clusters: list[ClusterConfig],
        metrics: Metrics | None = None,
        grace_seconds: float | None = None,
    ) -> None:
        self.metrics = metrics
        self.clusters = [
            ClusterRuntime(config, config.adapter(), runner_for_cluster(config))
            for config in clusters
        ]
        self.by_name = {cluster.name: cluster for cluster in self.clusters}
        self.grace_seconds = grace_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.last_cycle: CycleStats | None = None
        self.cycle_errors = 0

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> Engine:
        clusters = load_clusters(settings.config_dir, default_work_dir=settings.work_dir)
        if settings.config_dir is None:
            log.info(
                "no configuration directory; using the built-in local cluster (work dir %s)",
                clusters[0].work_dir,
            )
        return cls(clusters, metrics)

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._record_resources()
        for cluster in self.clusters:
            if getattr(cluster.config, "insecure_skip_host_key_check", False):
                log.warning(
                    "cluster %s: SSH host key checking is DISABLED (insecure_skip_host_key_check)",
                    cluster.name,
                )
        await self.reconcile()
        self._task = asyncio.create_task(self._loop(), name="airavata-engine")
        log.info(
            "engine started with clusters: %s",
            ", ".join(f"{c.name} ({c.config.type})" for c in self.clusters),
        )

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for cluster in self.clusters:
            await cluster.runner.close()

    def experiment_changed(self, experiment_id: str) -> None:
        """Called by the API after submit or cancel: run a cycle now rather than later."""
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.run_cycle()
            except Exception:  # one bad cycle must not stop the engine; the next one retries
                self.cycle_errors += 1
                log.exception("engine cycle failed; retrying next cycle")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._until_next_poll())
            except TimeoutError:
                pass
            self._wake.clear()

    def _tick(self) -> float:
        """The longest the loop sleeps: pending work is picked up at least this often."""
        intervals = [c.config.poll_interval for c in self.clusters] or [5.0]
        return max(0.2, min(min(intervals) / 2, 2.0))

    def _until_next_poll(self) -> float:
        """Sleep until the next cluster's poll is due (not a fixed tick after a slow cycle)."""
        now = time.monotonic()
        due = [c.last_poll + c.config.poll_interval - now for c in self.clusters]
        return max(0.05, min([self._tick(), *due]))

    async def run_cycle(self, force_poll: bool = False) -> None:
        """One pass over every cluster; tests call this directly to step the engine."""
        stats = CycleStats()
        self._place_pending()
        await asyncio.gather(*(self._cycle_cluster(c, force_poll) for c in self.clusters))
        self._settle_experiments()
        stats.finished = time.monotonic()
        self.last_cycle = stats

    async def _cycle_cluster(self, cluster: ClusterRuntime, force_poll: bool) -> None:
        try:
            await self._cancel_requested(cluster)
            await self._submit_assigned(cluster)
            due = time.monotonic() - cluster.last_poll >= cluster.config.poll_interval
            if force_poll or due:
                await self._poll(cluster)
        except RemoteCommandError as exc:
            if not exc.transient:
                raise
            cluster.mark_unreachable(exc)
        self._record_health(cluster)

    # -- placement ------------------------------------------------------------------------

    def _place_pending(self) -> None:
        """PENDING -> ASSIGNED: choose a cluster and write one attempt per task."""
        pending = (
            Task.select(Task.experiment)
            .where(Task.status == TaskStatus.PENDING)
            .distinct()
            .tuples()
        )
        for (experiment_id,) in pending:
            experiment = Experiment.get_or_none(Experiment.id == experiment_id)
            if experiment is None or experiment.status == ExperimentStatus.CANCELLED:
                continue
            cluster = choose_cluster(experiment, self.clusters)
            if cluster is None:
                self._fail_unplaceable(experiment)
                continue
            self._assign(experiment, cluster)

    def _fail_unplaceable(self, experiment: Experiment) -> None:
        reason = explain_no_cluster(experiment, self.clusters)
        ids = [
            t.id
            for t in Task.select(Task.id).where(
                (Task.experiment == experiment.id) & (Task.status == TaskStatus.PENDING)
            )
        ]
        moved = move_tasks(ids, TaskStatus.FAILED, error_message=reason, completed_at=utcnow())
        log.warning("experiment %s: %s tasks failed: %s", experiment.id, moved, reason)
        events.record_many(
            {
                "experiment_id": experiment.id,
                "task_id": task_id,
                "event_type": "TASK_FAILED",
                "details": {"error": reason},
            }
            for task_id in ids
        )

    def _capacity(self, cluster: ClusterRuntime) -> int:
        limit = cluster.config.max_queued_jobs
        if not limit:
            return 1_000_000
        busy = (
            TaskAttempt.select()
            .where(
                (TaskAttempt.cluster == cluster.name)
                & TaskAttempt.state.in_(("ASSIGNED", *ACTIVE_ATTEMPT))
            )
            .count()
        )
        return max(0, limit - busy)

    def _assign(self, experiment: Experiment, cluster: ClusterRuntime) -> None:
        capacity = self._capacity(cluster)
        if capacity <= 0:
            return
        tasks = list(
            Task.select()
            .where((Task.experiment == experiment.id) & (Task.status == TaskStatus.PENDING))
            .order_by(Task.set_index)
            .limit(capacity)
        )
        chunk = max(1, cluster.config.max_array_size or 1000)
        base = posixpath.join(cluster.config.work_dir, "experiments", experiment.id)
        for start in range(0, len(tasks), chunk):
            group = tasks[start : start + chunk]
            submission = uuid.uuid4().hex
            job_name = f"ah-{submission[:16]}"
            work_dir = posixpath.join(base, job_name)
            now = utcnow()
            with database.atomic():
                moved_ids = [t.id for t in group]
                if move_tasks(
                    moved_ids, TaskStatus.ASSIGNED, cluster=cluster.name, assigned_at=now
                ) != len(group):
                    # Someone (a cancel) changed some of these tasks meanwhile; try again later.
                    database.rollback()
                    continue
                TaskAttempt.insert_many(
                    [
                        {
                            "id": uuid.uuid4().hex,
                            "task": task.id,
                            "number": task.retry_count + 1,
                            "cluster": cluster.name,
                            "submission_id": submission,
                            "array_index": index,
                            "job_name": job_name,
                            "work_dir": posixpath.join(work_dir, f"t{index}"),
                            "state": "ASSIGNED",
                            "submitted_at": now,
                        }
                        for index, task in enumerate(group)
                    ]
                ).execute()
            log.info(
                "experiment %s: %s tasks assigned to cluster %s as %s",
                experiment.id,
                len(group),
                cluster.name,
                job_name,
            )

    # -- submission -----------------------------------------------------------------------

    async def _submit_assigned(self, cluster: ClusterRuntime, recovering: bool = False) -> None:
        """Submit every recorded-but-unsubmitted submission of this cluster."""
        rows = (
            TaskAttempt.select(
                TaskAttempt.submission_id, peewee.fn.MAX(TaskAttempt.submit_failures)
            )
            .where(
                (TaskAttempt.cluster == cluster.name)
                & (TaskAttempt.state == "ASSIGNED")
                & TaskAttempt.native_job_id.is_null()
            )
            .group_by(TaskAttempt.submission_id)
            .tuples()
        )
        for submission, failures in rows:
            await self._submit(cluster, submission, look_up_first=recovering or failures > 0)

    def _batch_job(
        self, cluster: ClusterRuntime, attempts: list[TaskAttempt], experiment: Experiment
    ) -> BatchJob:
        config = cluster.config
        requirements = experiment.compute_requirements or {}
        walltime = walltime_seconds(config, requirements)
        elements = tuple(
            JobElement(
                index=attempt.array_index, task_dir=attempt.work_dir, command=attempt.task.command
            )
            for attempt in attempts
        )
        return BatchJob(
            name=attempts[0].job_name,
            work_dir=posixpath.dirname(attempts[0].work_dir),
            elements=elements,
            walltime_seconds=walltime,
            cores=int(requirements.get("cores", 1)),
            nodes=int(requirements.get("nodes", 1)),
            memory_mb=requirements.get("memory_mb"),
            gpus=int(requirements.get("gpus", 0)),
            partition=config.queue,
            account=config.account,
            throttle=config.array_throttle,
            environment_setup=tuple(config.environment_setup or ()),
        )

    async def _submit(self, cluster: ClusterRuntime, submission: str, look_up_first: bool) -> None:
        attempts = list(
            TaskAttempt.select(TaskAttempt, Task)
            .join(Task)
            .where(TaskAttempt.submission_id == submission)
            .order_by(TaskAttempt.array_index)
        )
        if not attempts:
            return
        experiment = Experiment.get_by_id(attempts[0].task.experiment_id)
        job = self._batch_job(cluster, attempts, experiment)

        # After a crash or a failed try, the job may exist already: never submit it twice.
        found = await self._find_by_name(cluster, job.name) if look_up_first else []
        if found:
            native = found[0]
            log.info("cluster %s: adopting job %s found by name %s", cluster.name, native, job.name)
        else:
            template = cluster.config.template_source()
            await cluster.runner.write_files(
                {job.script_path: cluster.adapter.render_script(job, template)}
            )
            result = await cluster.run(
                "submit", cluster.adapter.submit_command(job.script_path), self.metrics, check=False
            )
            if result.exit_status != 0:
                self._submit_refused(cluster, attempts, result)
                return
            native = cluster.adapter.parse_submit_output(result.stdout)
            log.info(
                "cluster %s: submitted %s as job %s (%s tasks)",
                cluster.name,
                job.name,
                native,
                len(attempts),
            )

        element_ids = cluster.adapter.element_job_ids(native, job)
        with database.atomic():
            for attempt in attempts:
                TaskAttempt.update(native_job_id=element_ids[attempt.array_index]).where(
                    TaskAttempt.id == attempt.id
                ).execute()
            TaskAttempt.update(state="QUEUED").where(
                (TaskAttempt.submission_id == submission) & (TaskAttempt.state == "ASSIGNED")
            ).execute()
            move_tasks([a.task_id for a in attempts], TaskStatus.QUEUED)
            events.record_many(
                {
                    "experiment_id": experiment.id,
                    "task_id": a.task_id,
                    "event_type": "TASK_SUBMITTED",
                    "worker_id": f"{cluster.name}/{element_ids[a.array_index]}",
                }
                for a in attempts
            )

    def _submit_refused(
        self, cluster: ClusterRuntime, attempts: list[TaskAttempt], result: Any
    ) -> None:
        """A submit command that ran and said no. When the adapter recognises the words as a
        rejection of the request (unknown partition, limits), the tasks fail at once with the
        batch system's message; anything else may be the cluster being unwell (munge stopped,
        controller down), so the cluster is degraded and the submission tried again next
        cycle, however long that takes: an outage never fails a task."""
        message = (result.stderr or result.stdout).strip() or f"exit {result.exit_status}"
        failures = attempts[0].submit_failures + 1
        TaskAttempt.update(submit_failures=failures, error=message).where(
            TaskAttempt.submission_id == attempts[0].submission_id
        ).execute()
        if cluster.adapter.submission_rejected(result.stderr or result.stdout):
            self._submission_failed(
                attempts, f"submission rejected by cluster {cluster.name}: {message}"
            )
            return
        cluster.mark_unreachable(
            RemoteCommandError(
                result.command,
                result.exit_status,
                result.stdout,
                result.stderr,
                transient=True,
                problem=f"submission refused ({failures} tries so far)",
                cluster=cluster.name,
            )
        )

    async def _find_by_name(self, cluster: ClusterRuntime, name: str) -> list[str]:
        result = await cluster.run(
            "find", cluster.adapter.find_jobs_by_name_command(name), self.metrics, check=False
        )
        if result.exit_status != 0:
            return []
        return cluster.adapter.parse_find_jobs_output(result.stdout, name)

    def _submission_failed(self, attempts: list[TaskAttempt], reason: str) -> None:
        log.warning("submission %s failed: %s", attempts[0].job_name, reason)
        now = utcnow()
        for attempt in attempts:
            TaskAttempt.update(state="FAILED", error=reason, completed_at=now).where(
                TaskAttempt.id == attempt.id
            ).execute()
            self._attempt_failed(attempt.task, reason, exit_code=None, worker=None)

    # -- monitoring -----------------------------------------------------------------------

    async def _poll(self, cluster: ClusterRuntime) -> None:
        cluster.last_poll = time.monotonic()
        before = cluster.commands
        attempts = list(
            TaskAttempt.select(TaskAttempt, Task.id, Task.experiment, Task.started_at)
            .join(Task)
            .where(
                (TaskAttempt.cluster == cluster.name)
                & TaskAttempt.state.in_(ACTIVE_ATTEMPT)
                & TaskAttempt.native_job_id.is_null(False)
            )
        )
        if not attempts:
            cluster.last_poll_commands = 0
            return

        ids = sorted({a.native_job_id for a in attempts})
        result = await cluster.run(
            "status", cluster.adapter.status_command(ids), self.metrics, check=False
        )
        if not cluster.adapter.status_output_usable(result.exit_status, result.stderr):
            cluster.mark_unreachable(
                RemoteCommandError(
                    result.command, result.exit_status, result.stdout, result.stderr, transient=True
                )
            )
            return
        native = cluster.adapter.parse_status_output(result.stdout)

        to_read = []
        for attempt in attempts:
            state = native.get(attempt.native_job_id)
            if state is None or state.status.is_final:
                to_read.append(attempt)
            elif state.status == TaskStatus.RUNNING and attempt.state == "QUEUED":
                self._mark_running(attempt, None)
        if to_read:
            await self._settle_from_files(cluster, to_read, native)
        cluster.last_poll_commands = cluster.commands - before

    def _mark_running(self, attempt: TaskAttempt, started: datetime | None) -> None:
        TaskAttempt.update(state="RUNNING", started_at=started or utcnow()).where(
            (TaskAttempt.id == attempt.id) & (TaskAttempt.state == "QUEUED")
        ).execute()
        if move_tasks([attempt.task_id], TaskStatus.RUNNING, started_at=started or utcnow()):
            events.record(
                attempt.task.experiment_id,
                "TASK_STARTED",
                task_id=attempt.task_id,
                worker_id=f"{attempt.cluster}/{attempt.native_job_id}",
            )

    async def _settle_from_files(
        self,
        cluster: ClusterRuntime,
        attempts: list[TaskAttempt],
        native: dict[str, NativeJobStatus],
    ) -> None:
        """One batched read of the status files (and output tails) of jobs not in the queue
        or reported finished; completion comes from those files."""
        files = await self._read_element_files(cluster, attempts)
        requirements = dict(
            Experiment.select(Experiment.id, Experiment.compute_requirements)
            .where(Experiment.id.in_({a.task.experiment_id for a in attempts}))
            .tuples()
        )
        for attempt in attempts:
            status_text, stdout, stderr = files[attempt.id]
            status = scripts.parse_element_status(status_text)
            reported = native.get(attempt.native_job_id)
            needs = requirements.get(attempt.task.experiment_id) or {}
            if status is not None and status.finished:
                self._finish(cluster, attempt, status, reported, stdout, stderr, needs)
            elif reported is not None and reported.status.is_final:
                # The scheduler says it is over but the wrapper never wrote an end line:
                # killed (time limit, memory, node failure, cancel) before it could.
                reason = _reason_text(reported, stderr)
                self._close_attempt(cluster, attempt, status, None, reason, stdout, needs)
            else:
                # Not in the queue and no end line: running by its file (a queue listing may
                # miss it), or killed before the wrapper could write; the grace period tells.
                if status is not None and attempt.state == "QUEUED":
                    self._mark_running(attempt, _epoch(status.start))
                self._maybe_vanished(cluster, attempt, status, stdout, stderr, needs)

    async def _read_element_files(
        self, cluster: ClusterRuntime, attempts: list[TaskAttempt]
    ) -> dict[str, tuple[str | None, str, str]]:
        """Each attempt's status file (None when missing) and the last bytes of its stdout and
        stderr, all in one remote command."""
        names = (scripts.STATUS_FILE, scripts.STDOUT_FILE, scripts.STDERR_FILE)
        paths = [posixpath.join(a.work_dir, name) for a in attempts for name in names]
        boundary = f"--airavata-{uuid.uuid4().hex}--"
        result = await cluster.run(
            "read", tail_command(paths, STDOUT_TAIL_BYTES, boundary), self.metrics, check=False
        )
        texts = parse_tails(result.stdout, boundary)
        found = {}
        for attempt in attempts:
            status, out, err = (posixpath.join(attempt.work_dir, name) for name in names)
            found[attempt.id] = (texts.get(status), texts.get(out, ""), texts.get(err, ""))
        return found

    def _finish(
        self,
        cluster: ClusterRuntime,
        attempt: TaskAttempt,
        status: scripts.ElementStatus,
        reported: NativeJobStatus | None,
        stdout: str,
        stderr: str,
        needs: dict[str, Any],
    ) -> None:
        if status.exit_code == 0:
            self._close_attempt(cluster, attempt, status, 0, None, stdout, needs)
            return
        reason = f"exit code {status.exit_code}"
        meaning = cluster.adapter.EXIT_REASONS.get(status.exit_code)
        if meaning:
            reason += f": {meaning}"
        if reported is not None and reported.status != TaskStatus.COMPLETED:
            reason += f" ({reported.native_state}"
            reason += f": {reported.reason})" if reported.reason else ")"
        tail = _last_lines(stderr)
        if tail:
            reason += f"; stderr: {tail}"
        self._close_attempt(cluster, attempt, status, status.exit_code, reason, stdout, needs)

    def _maybe_vanished(
        self,
        cluster: ClusterRuntime,
        attempt: TaskAttempt,
        status: scripts.ElementStatus | None,
        stdout: str,
        stderr: str,
        needs: dict[str, Any],
    ) -> None:
        """Gone from the queue without an end line: wait a grace period (the file system may
        lag, the scheduler may be between states), then call it failed."""
        now = utcnow()
        if attempt.missing_since is None:
            TaskAttempt.update(missing_since=now).where(TaskAttempt.id == attempt.id).execute()
            return
        grace = self.grace_seconds
        if grace is None:
            grace = max(60.0, 3 * cluster.config.poll_interval)
        if (now - attempt.missing_since).total_seconds() < grace:
            return
        reason = VANISHED
        tail = _last_lines(stderr)
        if tail:
            reason += f"; stderr: {tail}"
        self._close_attempt(cluster, attempt, status, None, reason, stdout, needs)

    def _close_attempt(
        self,
        cluster: ClusterRuntime,
        attempt: TaskAttempt,
        status: scripts.ElementStatus | None,
        exit_code: int | None,
        error: str | None,
        stdout: str,
        needs: dict[str, Any],
    ) -> None:
        """Record an attempt's end; ``needs`` is its experiment's compute_requirements."""
        started = _epoch(status.start) if status else None
        ended = _epoch(status.end) if status and status.end else utcnow()
        host = status.host if status else None
        success = exit_code == 0 and error is None
        if not success and started is not None:
            limit = walltime_seconds(cluster.config, needs)
            if (ended - started).total_seconds() >= limit - 1:
                # Batch systems kill at the limit with SIGTERM or SIGKILL; the wrapper then
                # records 143 or nothing at all. The elapsed time says why.
                error = f"time limit of {limit} s reached; {error or 'killed'}"
        state = "COMPLETED" if success else "FAILED"
        with database.atomic():
            changed = (
                TaskAttempt.update(
                    state=state,
                    exit_code=exit_code,
                    error=error,
                    host=host,
                    started_at=started or attempt.started_at,
                    completed_at=ended,
                )
                .where((TaskAttempt.id == attempt.id) & TaskAttempt.state.in_(ACTIVE_ATTEMPT))
                .execute()
            )
            if not changed:
                return
            worker = f"{cluster.name}/{attempt.native_job_id}"
            duration = (ended - started).total_seconds() if started else None
            cores = int(needs.get("cores", 1))
            metrics = {
                "host": host,
                "duration_sec": duration,
                "cluster": cluster.name,
                "native_job_id": attempt.native_job_id,
                "cores": cores,
            }
            summary = {"exit_code": exit_code, "stdout_tail": stdout[-STDOUT_TAIL_BYTES:]}
            cost = None
            if duration is not None and cluster.config.cost_per_core_hour:
                cost = duration / 3600.0 * cores * cluster.config.cost_per_core_hour
            common = {
                "started_at": started or attempt.task.started_at,
                "exit_code": exit_code,
                "execution_metrics": metrics,
                "result_summary": summary,
                "duration_sec": duration,
                "cost": cost,
            }
            if success:
                if move_tasks(
                    [attempt.task_id],
                    TaskStatus.COMPLETED,
                    completed_at=ended,
                    error_message=None,
                    **common,
                ):
                    events.record(
                        attempt.task.experiment_id,
                        "TASK_COMPLETED",
                        task_id=attempt.task_id,
                        worker_id=worker,
                        details={"exit_code": 0, "duration_sec": duration},
                    )
                    self._count(cluster, TaskStatus.COMPLETED)
            else:
                Task.update(**common).where(Task.id == attempt.task_id).execute()
                self._attempt_failed(attempt.task, error or "failed", exit_code, worker)
        log.log(
            logging.DEBUG if success else logging.INFO,
            "cluster %s: job %s (task %s) %s%s",
            cluster.name,
            attempt.native_job_id,
            attempt.task_id,
            state,
            f": {error}" if error else "",
        )

    def _attempt_failed(
        self, task: Task, reason: str, exit_code: int | None, worker: str | None
    ) -> None:
        """Retry while retry_count < max_retries, else the task has FAILED."""
        task = Task.get_by_id(task.id)
        if task.retry_count < task.max_retries:
            if move_tasks(
                [task.id],
                TaskStatus.PENDING,
                retry_count=task.retry_count + 1,
                error_message=reason,
            ):
                events.record(
                    task.experiment_id,
                    "TASK_RETRIED",
                    task_id=task.id,
                    worker_id=worker,
                    details={"error": reason, "retry": task.retry_count + 1},
                )
                log.info(
                    "task %s failed (%s); retry %s of %s",
                    task.id,
                    reason,
                    task.retry_count + 1,
                    task.max_retries,
                )
            return
        if move_tasks(
            [task.id],
            TaskStatus.FAILED,
            error_message=reason,
            completed_at=utcnow(),
            exit_code=exit_code,
        ):
            events.record(
                task.experiment_id,
                "TASK_FAILED",
                task_id=task.id,
                worker_id=worker,
                details={"error": reason, "exit_code": exit_code},
            )
            if task.cluster:
                self._count(self.by_name.get(task.cluster), TaskStatus.FAILED)

    def _count(self, cluster: ClusterRuntime | None, status: TaskStatus) -> None:
        if self.metrics is not None and cluster is not None:
            self.metrics.task_transitions.labels(cluster.name, status.value).inc()

    # -- cancel ---------------------------------------------------------------------------

    async def _cancel_requested(self, cluster: ClusterRuntime) -> None:
        """One cancel command per cluster for every attempt a user cancelled."""
        attempts = list(
            TaskAttempt.select().where(
                (TaskAttempt.cluster == cluster.name) & (TaskAttempt.state == "CANCEL_REQUESTED")
            )
        )
        if not attempts:
            return
        ids = sorted({a.native_job_id for a in attempts if a.native_job_id})
        for name in sorted({a.job_name for a in attempts if not a.native_job_id}):
            ids += await self._find_by_name(cluster, name)
        if ids:
            await cluster.run(
                "cancel", cluster.adapter.cancel_command(ids), self.metrics, check=False
            )
            log.info("cluster %s: cancelled %s job(s)", cluster.name, len(ids))
        TaskAttempt.update(state="CANCELLED", completed_at=utcnow()).where(
            TaskAttempt.id.in_([a.id for a in attempts]) & (TaskAttempt.state == "CANCEL_REQUESTED")
        ).execute()

    # -- experiments and recovery ---------------------------------------------------------

    def _settle_experiments(self) -> None:
        """SUBMITTED -> RUNNING when a task runs; -> COMPLETED / FAILED when all are final."""
        open_experiments = Experiment.select(Experiment.id, Experiment.status).where(
            Experiment.status.in_([ExperimentStatus.SUBMITTED, ExperimentStatus.RUNNING])
        )
        for experiment in open_experiments:
            counts = task_counts(experiment.id)
            total = sum(counts.values())
            final = sum(n for s, n in counts.items() if TaskStatus(s).is_final)
            if total and final == total:
                outcome = (
                    ExperimentStatus.COMPLETED
                    if counts.get(TaskStatus.COMPLETED, 0) == total
                    else ExperimentStatus.FAILED
                )
                if move_experiment(experiment.id, outcome):
                    events.record(
                        experiment.id, f"EXPERIMENT_{outcome.value}", details=dict(counts)
                    )
                    log.info("experiment %s %s (%s)", experiment.id, outcome.value, dict(counts))
            elif experiment.status == ExperimentStatus.SUBMITTED and (
                counts.get(TaskStatus.RUNNING) or final
            ):
                move_experiment(experiment.id, ExperimentStatus.RUNNING)

    async def reconcile(self) -> None:
        """After a restart: submissions recorded but never confirmed are looked up by job
        name (adopted when found, submitted when not); everything else is simply polled."""
        for cluster in self.clusters:
            try:
                await self._submit_assigned(cluster, recovering=True)
            except RemoteCommandError as exc:
                cluster.mark_unreachable(exc)
        unknown = [
            name
            for name in TaskAttempt.select(TaskAttempt.cluster)
            .distinct()
            .where(TaskAttempt.state.in_(("ASSIGNED", *ACTIVE_ATTEMPT)))
            .tuples()
            if name[0] not in self.by_name
        ]
        for (name,) in unknown:
            log.error(
                "tasks are active on cluster %s, which is no longer configured; they "
                "keep their state until it is configured again",
                name,
            )

    # -- health ---------------------------------------------------------------------------

    def _record_resources(self) -> None:
        for cluster in self.clusters:
            (
                ComputeResource.insert(
                    name=cluster.name,
                    type=cluster.config.type,
                    host=getattr(cluster.config, "host", None),
                    compute_types=list(cluster.compute_types),
                    health=cluster.health,
                    updated_at=utcnow(),
                )
                .on_conflict(
                    conflict_target=[ComputeResource.name],
                    update={
                        ComputeResource.type: cluster.config.type,
                        ComputeResource.host: getattr(cluster.config, "host", None),
                        ComputeResource.compute_types: list(cluster.compute_types),
                        ComputeResource.updated_at: utcnow(),
                    },
                )
                .execute()
            )

    def _record_health(self, cluster: ClusterRuntime) -> None:
        ComputeResource.update(
            health=cluster.health, health_detail=cluster.last_error, updated_at=utcnow()
        ).where(ComputeResource.name == cluster.name).execute()

    def health(self) -> dict[str, dict[str, Any]]:
        """Components for /health/detailed: the engine loop and every cluster."""
        now = time.monotonic()
        age = (
            (now - self.last_cycle.finished)
            if self.last_cycle and self.last_cycle.finished
            else None
        )
        running = self._task is not None and not self._task.done()
        stale = age is None or age > 10 * self._tick() + 30
        daemon = {
            "status": "healthy" if running and not stale else "unhealthy",
            "details": {
                "running": running,
                "last_cycle_age_sec": round(age, 2) if age is not None else None,
                "failed_cycles": self.cycle_errors,
            },
        }
        per_cluster = {
            c.name: {
                "type": c.config.type,
                "status": c.health,
                "last_error": c.last_error,
                "commands_last_poll": c.last_poll_commands,
            }
            for c in self.clusters
        }
        states = {c.health for c in self.clusters}
        overall = (
            "healthy"
            if states <= {"healthy", "unknown"}
            else "unhealthy"
            if states == {"degraded"}
            else "degraded"
        )
        active = TaskAttempt.select().where(TaskAttempt.state.in_(ACTIVE_ATTEMPT)).count()
        return {
            "scheduler_daemon": daemon,
            "compute_resources": {"status": overall, "details": per_cluster},
            "workers": {
                "status": "healthy",
                "details": {
                    "active_batch_jobs": active,
                    "note": "each task runs as a batch job; no worker pool",
                },
            },
        }


def walltime_seconds(config: ClusterConfig, requirements: dict[str, Any]) -> int:
    """The time limit a task's job gets: its requirement, capped by the cluster's maximum."""
    walltime = int(
        requirements.get("walltime_seconds")
        or _walltime_from_text(requirements.get("walltime"))
        or DEFAULT_WALLTIME
    )
    if config.max_walltime:
        walltime = min(walltime, int(config.max_walltime))
    return walltime


def tail_command(paths: list[str], size: int, boundary: str) -> list[str]:
    """One ``sh`` that prints ``boundary path`` then the last ``size`` bytes of each file that
    exists; a missing file prints nothing at all."""
    script = (
        'b=$1; n=$2; shift 2; for f in "$@"; do [ -e "$f" ] || continue; '
        'printf "%s %s\\n" "$b" "$f"; tail -c "$n" -- "$f" 2>/dev/null; done'
    )
    return ["sh", "-c", script, "sh", boundary, str(size), *paths]


def parse_tails(output: str, boundary: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    for chunk in output.split(boundary + " ")[1:]:
        path, _, text = chunk.partition("\n")
        texts[path] = text
    return texts


def _epoch(seconds: int | None) -> datetime | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def _last_lines(text: str, count: int = STDERR_TAIL_LINES) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def _reason_text(reported: NativeJobStatus, stderr: str) -> str:
    reason = f"{reported.native_state}"
    if reported.reason:
        reason += f": {reported.reason}"
    if reported.exit_code is not None:
        reason += f" (exit code {reported.exit_code})"
    tail = _last_lines(stderr)
    if tail:
        reason += f"; stderr: {tail}"
    return reason


def _walltime_from_text(text: Any) -> int | None:
    """``HH:MM:SS``, ``MM:SS`` or a number of seconds."""
    if text is None:
        return None
    if isinstance(text, int | float):
        return int(text)
    parts = [int(p) for p in str(text).split(":")]
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds
