"""Local adapter: the same contract on a machine without a batch system, with POSIX tools.

Submitting starts the script detached in a session of its own (``setsid``, util-linux) and
prints its PID, which is the job id and also the process group id: a cancel is one
``kill -TERM -- -<pgid>`` for the whole job. Inside that one script the elements run with at
most (machine cores // job cores) at a time, fewer with a throttle, each under
``timeout`` for the walltime, and write the same status files as on a batch system.

Status is one ``ps`` listing. Our jobs are recognised by a marker argument
(``airavata-hpc-local-job``) so that a recycled PID is never mistaken for a job, and by the
script name ``<name>.sh`` (``BatchJob.script_path``) when jobs are looked up by name. Exited jobs
are absent; a zombie (an exited job its parent has not reaped yet) counts as exited. Every
element of a job reports the job's own state, since ``ps`` cannot tell elements apart; the
status files say which element has started and which has ended.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Sequence
from typing import Any

from airavata_hpc.adapters.base import AdapterError, BatchAdapter, BatchJob, NativeJobStatus
from airavata_hpc.states import TaskStatus

log = logging.getLogger(__name__)

MARKER = "airavata-hpc-local-job"

#: First letter of ps's STAT column -> TaskStatus. Source: ps(1) of procps-ng, "PROCESS STATE
#: CODES". Z (zombie) and X (dead) are left out on purpose: that job has exited.
STATE_MAP: dict[str, TaskStatus] = {
    "R": TaskStatus.RUNNING,  # running or runnable
    "S": TaskStatus.RUNNING,  # sleeping, e.g. waiting for its elements
    "D": TaskStatus.RUNNING,  # uninterruptible sleep (I/O)
    "I": TaskStatus.RUNNING,  # idle kernel-style sleep
    "W": TaskStatus.RUNNING,  # paging (kernels before 2.6)
    "T": TaskStatus.RUNNING,  # stopped by a signal; keeps its resources like a suspended job
    "t": TaskStatus.RUNNING,  # stopped by a debugger
}
_EXITED = frozenset("ZX")

# Runs the script detached and prints the PID; $1 is the script. The job's own output goes to
# local.out/local.err beside the script, like a batch system's log files.
_LAUNCH = (
    'd=$(dirname "$1") && '
    f'setsid nohup bash "$1" {MARKER} >"$d/local.out" 2>"$d/local.err" </dev/null & '
    "echo $!"
)


class LocalAdapter(BatchAdapter):
    """Runs jobs as detached process groups on the machine the runner reaches."""

    #: ``timeout`` (GNU coreutils) exits 124 when the walltime runs out.
    EXIT_REASONS = {124: "time limit reached (walltime)"}
    type_name = "local"
    template_name = "local.sh.j2"
    STATE_MAP = STATE_MAP

    def __init__(self, cores: int = 1) -> None:
        """``cores``: how many cores the machine lends to jobs (the cluster's cores_per_node)."""
        if cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores}")
        self.cores = cores

    def concurrency(self, job: BatchJob) -> int:
        """How many elements of ``job`` run at once."""
        limit = max(1, self.cores // job.cores)
        if job.throttle:
            limit = min(limit, job.throttle)
        return min(limit, len(job.elements))

    def script_context(self, job: BatchJob) -> dict[str, Any]:
        context = super().script_context(job)
        context.update(
            concurrency=self.concurrency(job),
            walltime_limit_seconds=job.walltime_seconds,
        )
        return context

    def submit_command(self, script_path: str) -> list[str]:
        return ["sh", "-c", _LAUNCH, "airavata-hpc-submit", script_path]

    def parse_submit_output(self, stdout: str) -> str:
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        pid = lines[-1] if lines else ""
        if not pid.isdigit():
            raise AdapterError(self.type_name, "the launcher printed no PID", stdout)
        return pid

    def element_job_ids(self, native_id: str, job: BatchJob) -> dict[int, str]:
        return {element.index: native_id for element in job.elements}

    def status_command(self, job_ids: Sequence[str]) -> list[str]:
        # All processes: "ps -p" with one vanished PID exits 1; -ww keeps args whole.
        return ["ps", "-ww", "-eo", "pid=,pgid=,stat=,args="]

    def parse_status_output(self, stdout: str) -> dict[str, NativeJobStatus]:
        found: dict[str, NativeJobStatus] = {}
        for pid, stat, _args in self._our_processes(stdout):
            if stat[:1] in _EXITED:
                continue
            found[pid] = NativeJobStatus(
                job_id=pid,
                status=self.map_state(stat[:1], pid),
                native_state=stat,
                reason="stopped" if stat[:1] in "Tt" else None,
                exit_code=None,
            )
        return found

    @staticmethod
    def _our_processes(stdout: str) -> list[tuple[str, str, list[str]]]:
        rows = []
        for line in stdout.splitlines():
            parts = line.split(None, 3)
            if len(parts) < 4 or not parts[0].isdigit():
                continue
            pid, pgid, stat, args = parts[0], parts[1], parts[2], parts[3].split()
            # The script's subshells (one per running element) carry the same arguments; only
            # the group leader is the job. For an instant after submit, before setsid() has
            # run, the job is no group leader yet and is absent (absent never means finished).
            if pid == pgid and args and args[-1] == MARKER:
                rows.append((pid, stat, args))
        return rows

    def cancel_command(self, job_ids: Sequence[str]) -> list[str]:
        # A negative PID is the process group: the script and every element it started.
        return ["kill", "-TERM", "--", *(f"-{pid}" for pid in job_ids)]

    def find_jobs_by_name_command(self, name: str) -> list[str]:
        return self.status_command([])

    def parse_find_jobs_output(self, stdout: str, name: str) -> list[str]:
        wanted = f"{name}.sh"
        return [
            pid
            for pid, stat, args in self._our_processes(stdout)
            if stat[:1] not in _EXITED and any(posixpath.basename(a) == wanted for a in args)
        ]

    def version_command(self) -> list[str]:
        return ["uname", "-sr"]

    def queue_check_command(self, queue: str) -> list[str]:
        return ["true"]

    def queue_exists(self, exit_status: int, stdout: str) -> bool:
        # There are no queues here; any name is as good as the machine itself.
        return exit_status == 0
