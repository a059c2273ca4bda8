"""Slurm adapter: sbatch scripts, one ``squeue`` per poll, scancel.

Status comes from ``squeue --me --noheader --array --states=all --format=%i|%T|%r`` rather than
``squeue --json``, for robustness across versions:

* on 22.05, ``--json`` ignores every filter (``--me``, ``--states``; see its man page: "All other
  formatting and filtering arguments will be ignored"), so it would dump every user's jobs;
* the JSON layout changed with the data_parser plugins in 23.02 (``job_state`` became a list,
  ``exit_code`` an object) and keeps changing with the plugin version, while the ``%`` format
  letters have been stable for many releases;
* ``--states=all`` also lists jobs that ended within ``MinJobAge``, so one call sees the end of
  most jobs; those already purged are absent, and the element's status file decides.

``--me`` instead of a job list: ``squeue --jobs`` errors out when a requested job was purged
(seen on 22.05 with a single id), and one query per user is what site admins ask for.

When to revisit: the format query can give way to JSON once every supported site runs a Slurm
whose ``squeue --json`` honours ``--me``/``--states`` (check its man page) and whose JSON layout
we pin by data_parser version; ``--jobs`` could replace ``--me`` if a query naming a purged id
keeps reporting the others (try it against a controller with a low ``MinJobAge``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from airavata_hpc.adapters.base import (
    AdapterError,
    BatchAdapter,
    BatchJob,
    NativeJobStatus,
    clean_reason,
)
from airavata_hpc.states import TaskStatus

log = logging.getLogger(__name__)

#: Slurm job states (squeue %T) -> TaskStatus. Source: squeue(1), "JOB STATE CODES",
#: https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES (checked against 22.05.8).
#: Suspended and stopped jobs keep their allocation, so they count as running.
STATE_MAP: dict[str, TaskStatus] = {
    "PENDING": TaskStatus.QUEUED,
    "CONFIGURING": TaskStatus.QUEUED,
    "REQUEUED": TaskStatus.QUEUED,
    "REQUEUE_FED": TaskStatus.QUEUED,
    "REQUEUE_HOLD": TaskStatus.QUEUED,
    "RESV_DEL_HOLD": TaskStatus.QUEUED,
    "RUNNING": TaskStatus.RUNNING,
    "COMPLETING": TaskStatus.RUNNING,
    "RESIZING": TaskStatus.RUNNING,
    "SIGNALING": TaskStatus.RUNNING,
    "SUSPENDED": TaskStatus.RUNNING,
    "STOPPED": TaskStatus.RUNNING,
    "STAGE_OUT": TaskStatus.STAGING,
    "COMPLETED": TaskStatus.COMPLETED,
    "CANCELLED": TaskStatus.CANCELLED,
    "REVOKED": TaskStatus.CANCELLED,
    "FAILED": TaskStatus.FAILED,
    "TIMEOUT": TaskStatus.FAILED,
    "NODE_FAIL": TaskStatus.FAILED,
    "BOOT_FAIL": TaskStatus.FAILED,
    "OUT_OF_MEMORY": TaskStatus.FAILED,
    "PREEMPTED": TaskStatus.FAILED,
    "DEADLINE": TaskStatus.FAILED,
    "SPECIAL_EXIT": TaskStatus.FAILED,
}

STATUS_FORMAT = "%i|%T|%r"
FIND_FORMAT = "%F|%j"

_ID_RE = re.compile(r"^\d+(_\d+)?$")
# Pending array elements grouped on one line when --array is not given: 123_[4-7,9%2]
_GROUPED_RE = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")


def _format_walltime(seconds: int) -> str:
    """Slurm's ``days-hours:minutes:seconds`` time format (sbatch --time)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def _expand_indices(spec: str) -> list[int]:
    indices: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        indices.extend(range(int(low), int(high or low) + 1))
    return indices


class SlurmAdapter(BatchAdapter):
    """Slurm 22.05 and later (``--me`` needs 20.11)."""

    # sbatch's messages for a request it will never accept (Slurm 22.05; see
    # src/common/slurm_errno.c for the full list).
    REJECTION_PATTERNS = (
        "Invalid partition name",
        "Invalid account",
        "Invalid qos",
        "Requested node configuration is not available",
        "Requested time limit is invalid",
        "More processors requested than permitted",
        "Invalid generic resource",
        "Memory required by task is not available",
        "Job violates accounting/QOS policy",
        "Invalid feature specification",
        "Node count specification invalid",
        "invalid number of nodes",
    )
    type_name = "slurm"
    template_name = "slurm.sh.j2"
    STATE_MAP = STATE_MAP

    def script_context(self, job: BatchJob) -> dict[str, Any]:
        context = super().script_context(job)
        spec = f"0-{len(job.elements) - 1}"
        if job.throttle:
            spec += f"%{job.throttle}"
        context.update(walltime=_format_walltime(job.walltime_seconds), array_spec=spec)
        return context

    def submit_command(self, script_path: str) -> list[str]:
        return ["sbatch", "--parsable", script_path]

    def parse_submit_output(self, stdout: str) -> str:
        # --parsable prints "<id>" or "<id>;<cluster>" on the last line.
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        job_id = lines[-1].split(";")[0] if lines else ""
        if not job_id.isdigit():
            raise AdapterError(self.type_name, "sbatch printed no job id", stdout)
        return job_id

    def element_job_ids(self, native_id: str, job: BatchJob) -> dict[int, str]:
        if not job.is_array:
            return {0: native_id}
        return {element.index: f"{native_id}_{element.index}" for element in job.elements}

    def status_command(self, job_ids: Sequence[str]) -> list[str]:
        # job_ids are not passed: see the module docstring (purged ids make squeue fail).
        return [
            "squeue",
            "--me",
            "--noheader",
            "--array",
            "--states=all",
            f"--format={STATUS_FORMAT}",
        ]

    def parse_status_output(self, stdout: str) -> dict[str, NativeJobStatus]:
        found: dict[str, NativeJobStatus] = {}
        for line in stdout.splitlines():
            if not line.strip():
                continue
            parts = line.strip().split("|")
            if len(parts) != 3:
                raise AdapterError(self.type_name, f"squeue line is not {STATUS_FORMAT}", line)
            raw_id, state, reason = (part.strip() for part in parts)
            # squeue prints "CANCELLED"; sacct-style "CANCELLED by 1001" or "+" never hurt.
            state = state.split()[0].rstrip("+") if state else state
            for job_id in self._ids(raw_id, line):
                found[job_id] = NativeJobStatus(
                    job_id=job_id,
                    status=self.map_state(state, job_id),
                    native_state=state,
                    reason=clean_reason(reason),
                    exit_code=None,  # squeue has no exit code; the element's status file has it
                )
        return found

    def _ids(self, raw_id: str, line: str) -> list[str]:
        if _ID_RE.match(raw_id):
            return [raw_id]
        grouped = _GROUPED_RE.match(raw_id)
        if grouped:
            base, spec = grouped.groups()
            return [f"{base}_{index}" for index in _expand_indices(spec)]
        raise AdapterError(self.type_name, f"unexpected job id {raw_id!r} from squeue", line)

    def cancel_command(self, job_ids: Sequence[str]) -> list[str]:
        return ["scancel", *job_ids]

    def find_jobs_by_name_command(self, name: str) -> list[str]:
        return [
            "squeue",
            "--me",
            "--noheader",
            "--states=all",
            f"--name={name}",
            f"--format={FIND_FORMAT}",
        ]

    def parse_find_jobs_output(self, stdout: str, name: str) -> list[str]:
        ids: list[str] = []
        for line in stdout.splitlines():
            base, sep, job_name = line.strip().partition("|")
            if sep and job_name.strip() == name and base.strip().isdigit():
                if base.strip() not in ids:
                    ids.append(base.strip())
        return ids

    def version_command(self) -> list[str]:
        return ["sbatch", "--version"]

    def queue_check_command(self, queue: str) -> list[str]:
        return ["sinfo", "--noheader", f"--partition={queue}", "--format=%P %a"]
