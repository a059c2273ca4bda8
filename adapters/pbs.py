"""PBS adapter in two flavors: PBS Pro / OpenPBS (``pbspro``) and Torque (``torque``).

``pbspro`` polls ``qstat -f -F json -x -t <ids>``: JSON, finished jobs included (``-x``, within
the server's ``job_history_duration``), array subjobs expanded (``-t``), with ``Exit_status``.

``torque`` polls ``qstat -f <ids>`` and reads the ``key = value`` blocks, because Torque's qstat
and Slurm's torque wrappers (slurm-wlm-torque) have neither ``-F json`` nor ``-x``. The wrappers
are what the test lab has; their quirks, seen on slurm-wlm-torque 22.05.8:

* ``qsub`` prints the bare Slurm id (no ``.server``, no ``[]`` for arrays), and array elements
  get Slurm ids of their own that ``qstat -f`` shows without any index, so ``qstat`` cannot
  report array elements at all. Workaround: the status and find commands check whether
  ``qstat`` is one of these wrappers (a Perl script that says ``use Slurm``) and then ask the
  ``squeue`` beside it, whose ``123_4`` ids become ``123[4]``; elsewhere they run ``qstat``.
* ``qstat -f`` shows ``C`` for completed, failed and cancelled jobs alike, without
  ``exit_status``; a ``C`` without exit status is reported COMPLETED with a reason saying so.
* ``qstat -f`` exits 153 with no output when none of the ids is known; ``qstat -t``,
  ``qselect`` and ``qstat --version`` do not exist.
* ``qdel`` turns ids into numbers (``123[4]`` becomes ``123``: the whole array) and kills with
  SIGKILL, so a cancelled element never writes its end line; its final state decides.
* ``#PBS -o/-e`` in the script are overridden by the wrapper's own defaults, so ``-o``/``-e``
  go on the qsub command line.

These workarounds can go when the wrappers are no longer a deployment target (or once their
``qstat -f`` prints array indices and ``exit_status``); real Torque is unaffected by them.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections.abc import Sequence
from typing import Any

from airavata_hpc.adapters.base import (
    AdapterError,
    BatchAdapter,
    BatchJob,
    NativeJobStatus,
    clean_reason,
    format_hms,
)
from airavata_hpc.adapters.slurm import FIND_FORMAT, STATUS_FORMAT, SlurmAdapter
from airavata_hpc.states import TaskStatus

log = logging.getLogger(__name__)

FLAVORS = ("pbspro", "torque")

#: PBS job_state letters -> TaskStatus. Sources: pbs_job_attributes(7B) "job_state" and
#: qstat(1B) of OpenPBS (B, E, F, H, M, Q, R, S, T, U, W, X), Torque's qstat docs (C, E, H, Q,
#: R, T, W, S). The finished letters F, X and C map to COMPLETED here; a non-zero exit status
#: turns them into FAILED, and F/X without any exit status (deleted before it ran) into
#: CANCELLED (see :meth:`PBSAdapter._status`).
STATE_MAP: dict[str, TaskStatus] = {
    "Q": TaskStatus.QUEUED,
    "H": TaskStatus.QUEUED,
    "W": TaskStatus.QUEUED,
    "T": TaskStatus.QUEUED,
    "M": TaskStatus.QUEUED,  # moved to another server; still pending there
    "B": TaskStatus.RUNNING,  # array with at least one subjob started
    "R": TaskStatus.RUNNING,
    "E": TaskStatus.RUNNING,  # exiting: the job ran and PBS is cleaning up
    "S": TaskStatus.RUNNING,
    "U": TaskStatus.RUNNING,
    "F": TaskStatus.COMPLETED,
    "X": TaskStatus.COMPLETED,
    "C": TaskStatus.COMPLETED,
}
_FINISHED = frozenset("FXC")

_SUBMIT_RE = re.compile(r"^\d+(\[\d*\])?(\.[A-Za-z0-9_.-]+)?$")
_SUBJOB_RE = re.compile(r"\[\d+\]")
# What qstat prints for ids it no longer (or never) knew, while still reporting the others.
_UNKNOWN_ID_RE = re.compile(r"Unknown Job Id|Job has finished", re.IGNORECASE)
# Torque wrappers: "qstat -f" found none of the ids (no output, no message).
_NOTHING_MATCHED = 153
# Is qstat one of Slurm's torque wrappers? Then $q is its path and squeue lives beside it.
_IS_WRAPPER = 'q=$(command -v qstat) && grep -qs "^use Slurm" "$q"'
_TORQUE_STATUS = (
    f'if {_IS_WRAPPER}; then exec "$(dirname "$q")/squeue" --me --noheader --array '
    f'--states=all "--format={STATUS_FORMAT}"; fi; exec qstat -f "$@"'
)
_TORQUE_FIND = (
    f'if {_IS_WRAPPER}; then exec "$(dirname "$q")/squeue" --me --noheader --states=all '
    f'"--name=$1" "--format={FIND_FORMAT}"; fi; exec qstat -f'
)
_SLURM_LINE_RE = re.compile(r"^\d+(_\S+)?\|")
_SLURM_ELEMENT_RE = re.compile(r"^(\d+)_(\d+)$")


class PBSAdapter(BatchAdapter):
    """PBS Pro / OpenPBS (``flavor="pbspro"``) or Torque and its Slurm wrappers (``"torque"``)."""

    # qsub's messages for a request it will never accept (PBS Pro / OpenPBS, Torque, and Slurm's
    # torque wrappers, which pass sbatch's words through).
    REJECTION_PATTERNS = (
        "Unknown queue",
        "Job exceeds queue resource limits",
        "illegal attribute or resource value",
        "Unknown resource",
        "Job violates queue and/or server resource limits",
        "Bad UID for job execution",
        "invalid partition",
        "Invalid account",
    )
    type_name = "pbs"
    template_name = "pbs.sh.j2"
    STATE_MAP = STATE_MAP

    def __init__(self, flavor: str = "pbspro") -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"unknown PBS flavor {flavor!r}; known flavors: {', '.join(FLAVORS)}")
        self.flavor = flavor

    def script_context(self, job: BatchJob) -> dict[str, Any]:
        context = super().script_context(job)
        select = f"{job.nodes}:ncpus={job.cores}"
        nodes = f"{job.nodes}:ppn={job.cores}"
        if job.memory_mb:
            select += f":mem={job.memory_mb}mb"
        if job.gpus:
            select += f":ngpus={job.gpus}"
            nodes += f":gpus={job.gpus}"
        spec = f"0-{len(job.elements) - 1}"
        if job.throttle:
            spec += f"%{job.throttle}"
        context.update(
            flavor=self.flavor,
            walltime=format_hms(job.walltime_seconds),
            select=select,
            nodes_spec=nodes,
            array_option="-J" if self.flavor == "pbspro" else "-t",
            array_spec=spec,
        )
        return context

    def submit_command(self, script_path: str) -> list[str]:
        if self.flavor == "pbspro":
            return ["qsub", script_path]
        work_dir = posixpath.dirname(script_path)
        return [
            "qsub",
            "-o",
            posixpath.join(work_dir, "pbs.out"),
            "-e",
            posixpath.join(work_dir, "pbs.err"),
            script_path,
        ]

    def parse_submit_output(self, stdout: str) -> str:
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        job_id = lines[-1] if lines else ""
        if not _SUBMIT_RE.match(job_id):
            raise AdapterError(self.type_name, "qsub printed no job id", stdout)
        return job_id

    def element_job_ids(self, native_id: str, job: BatchJob) -> dict[int, str]:
        if not job.is_array:
            return {0: native_id}
        if "[]" in native_id:
            return {e.index: native_id.replace("[]", f"[{e.index}]", 1) for e in job.elements}
        # Slurm's torque wrappers print no "[]"; status maps their 123_4 to 123[4].
        return {e.index: f"{native_id}[{e.index}]" for e in job.elements}

    def status_command(self, job_ids: Sequence[str]) -> list[str]:
        if not job_ids:
            raise ValueError("qstat needs job ids: without them it lists every job of the server")
        if self.flavor == "torque":
            return ["sh", "-c", _TORQUE_STATUS, "airavata-hpc-status", *dict.fromkeys(job_ids)]
        # One parent id covers all its subjobs with -t.
        parents = dict.fromkeys(_SUBJOB_RE.sub("[]", job_id) for job_id in job_ids)
        return ["qstat", "-f", "-F", "json", "-x", "-t", *parents]

    def status_output_usable(self, exit_status: int, stderr: str) -> bool:
        if exit_status == 0:
            return True
        lines = [line for line in stderr.splitlines() if line.strip()]
        if not lines:
            return exit_status == _NOTHING_MATCHED
        return all(_UNKNOWN_ID_RE.search(line) for line in lines)

    def parse_status_output(self, stdout: str) -> dict[str, NativeJobStatus]:
        if self.flavor == "torque" and _is_squeue_output(stdout):
            return _from_squeue(stdout)
        jobs = self._parse_json(stdout) if self.flavor == "pbspro" else _parse_full(stdout)
        found: dict[str, NativeJobStatus] = {}
        for job_id, attributes in jobs.items():
            found[job_id] = self._status(job_id, attributes)
        return found

    def _parse_json(self, stdout: str) -> dict[str, dict[str, Any]]:
        if not stdout.strip():
            return {}
        try:
            # strict=False: attribute values may carry raw control characters (comments).
            document = json.loads(stdout, strict=False)
        except ValueError as exc:
            problem = f"qstat -F json output is not JSON ({exc})"
            raise AdapterError(self.type_name, problem, stdout) from None
        # qstat omits "Jobs" entirely when no job matched.
        jobs = document.get("Jobs", {}) if isinstance(document, dict) else None
        if not isinstance(jobs, dict):
            raise AdapterError(self.type_name, "qstat -F json output has no Jobs object", stdout)
        return jobs

    def _status(self, job_id: str, attributes: dict[str, Any]) -> NativeJobStatus:
        state = str(attributes.get("job_state", "")).strip()
        exit_code = _int_or_none(attributes.get("Exit_status", attributes.get("exit_status")))
        status = self.map_state(state, job_id)
        reason = clean_reason(str(attributes.get("comment", "")) or None)
        if state in _FINISHED:
            if exit_code is None and state == "C":
                reason = "finished; this qstat gives no exit status (the status file decides)"
            elif exit_code is None:
                status, reason = TaskStatus.CANCELLED, "finished without an exit status"
            elif exit_code > 256:
                # PBS Pro reports a job killed by signal N as 256 + N.
                status, reason = TaskStatus.FAILED, f"killed by signal {exit_code - 256}"
            elif exit_code != 0:
                status = TaskStatus.FAILED
        return NativeJobStatus(job_id, status, state, reason, exit_code)

    def cancel_command(self, job_ids: Sequence[str]) -> list[str]:
        return ["qdel", *job_ids]

    def find_jobs_by_name_command(self, name: str) -> list[str]:
        if self.flavor == "torque":
            return ["sh", "-c", _TORQUE_FIND, "airavata-hpc-find", name]
        return ["qselect", "-x", "-N", name]

    def parse_find_jobs_output(self, stdout: str, name: str) -> list[str]:
        if self.flavor == "torque" and _is_squeue_output(stdout):
            return SlurmAdapter().parse_find_jobs_output(stdout, name)
        if self.flavor == "torque":
            jobs = _parse_full(stdout)
            return [job_id for job_id, attrs in jobs.items() if attrs.get("Job_Name") == name]
        ids = (_SUBJOB_RE.sub("[]", line.strip()) for line in stdout.splitlines())
        return list(dict.fromkeys(job_id for job_id in ids if _SUBMIT_RE.match(job_id)))

    def version_command(self) -> list[str]:
        if self.flavor == "torque":
            # Slurm's torque wrappers have no --version; they drive Slurm, so ask Slurm.
            return ["sh", "-c", "qstat --version 2>/dev/null || sinfo --version"]
        return ["qstat", "--version"]

    def queue_check_command(self, queue: str) -> list[str]:
        return ["qstat", "-Q", queue]


def _is_squeue_output(stdout: str) -> bool:
    """Whether the torque status/find command answered through squeue (Slurm's wrappers)."""
    first = next((line.strip() for line in stdout.splitlines() if line.strip()), "")
    return bool(_SLURM_LINE_RE.match(first))


def _from_squeue(stdout: str) -> dict[str, NativeJobStatus]:
    """Slurm's view of jobs submitted through its torque wrappers, under PBS-style ids."""
    found: dict[str, NativeJobStatus] = {}
    for job_id, status in SlurmAdapter().parse_status_output(stdout).items():
        element = _SLURM_ELEMENT_RE.match(job_id)
        pbs_id = f"{element.group(1)}[{element.group(2)}]" if element else job_id
        found[pbs_id] = NativeJobStatus(
            pbs_id, status.status, status.native_state, status.reason, status.exit_code
        )
    return found


def _parse_full(stdout: str) -> dict[str, dict[str, str]]:
    """Torque-style ``qstat -f``: ``Job Id: X`` blocks of indented ``key = value`` lines.

    Torque wraps long values onto continuation lines that have no `` = ``.
    """
    jobs: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    last_key: str | None = None
    for line in stdout.splitlines():
        if line.startswith("Job Id:"):
            current = jobs.setdefault(line.split(":", 1)[1].strip(), {})
            last_key = None
        elif current is not None and " = " in line:
            key, _, value = line.strip().partition(" = ")
            current[key] = value.strip()
            last_key = key
        elif current is not None and last_key and line[:1] in ("\t", " ") and line.strip():
            current[last_key] += line.strip()
    return jobs


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None
