"""Son of Grid Engine (and other Grid Engine) adapter: qsub -terse, ``qstat -xml``, qdel.

Grid Engine forgets a job the moment it ends (``qstat -j`` no longer knows it), so finished
jobs are simply absent from the status output; the element's status file decides, and
``qacct`` (not polled: it reads the whole accounting file) could say more. Array tasks are
numbered from 1 in Grid Engine; our element index is ``SGE_TASK_ID - 1`` (the template maps it)
and an element's id is ``<job>.<task>`` as ``qdel`` accepts it.
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from airavata_hpc.adapters.base import (
    AdapterError,
    BatchAdapter,
    BatchJob,
    NativeJobStatus,
    format_hms,
)
from airavata_hpc.states import TaskStatus

log = logging.getLogger(__name__)

#: Grid Engine state letters -> TaskStatus. A state is a combination of letters ("hqw",
#: "Eqw", "dr", "Rr"); the first letter of STATE_PRIORITY found in it decides. Source:
#: qstat(1) of Son of Grid Engine 8.1.9, section OUTPUT FORMATS ("the status of the job - one
#: of d(eletion), E(rror), h(old), r(unning), R(estarted), s(uspended), S(uspended),
#: t(ransfering), T(hreshold), w(aiting) or z(ombie)").
STATE_MAP: dict[str, TaskStatus] = {
    "E": TaskStatus.FAILED,  # cannot start without an admin; qstat -j shows the error
    "r": TaskStatus.RUNNING,
    "t": TaskStatus.RUNNING,
    "R": TaskStatus.RUNNING,
    "s": TaskStatus.RUNNING,  # suspended jobs keep their slots
    "S": TaskStatus.RUNNING,
    "T": TaskStatus.RUNNING,
    "h": TaskStatus.QUEUED,
    "q": TaskStatus.QUEUED,
    "w": TaskStatus.QUEUED,
    "z": TaskStatus.COMPLETED,  # only with qstat -s z, which we do not ask for
    # qdel was called: a running job shows "dr" and is still running until it is killed, so
    # "d" decides only when no other letter does.
    "d": TaskStatus.CANCELLED,
}
STATE_PRIORITY = "ErtRsSThqwzd"

_REASONS = {
    "E": "error state (qstat -j shows why)",
    "h": "held",
    "s": "suspended",
    "S": "suspended (queue suspended)",
    "T": "suspended (threshold)",
    "d": "deletion requested",
}

_TASKS_RE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


class SGEAdapter(BatchAdapter):
    """Son of Grid Engine 8.1.9 (the Debian package); Univa and Altair GE share the CLI."""

    # qsub's messages for a request it will never accept (Son of Grid Engine 8.1.9).
    REJECTION_PATTERNS = (
        "unknown queue",
        "unknown resource",
        "job rejected",
        "no suitable queues",
        "denied: access",
        "invalid option argument",
    )
    type_name = "sge"
    template_name = "sge.sh.j2"
    STATE_MAP = STATE_MAP

    def __init__(self, parallel_environment: str = "smp") -> None:
        self.parallel_environment = parallel_environment

    def script_context(self, job: BatchJob) -> dict[str, Any]:
        context = super().script_context(job)
        per_slot = math.ceil(job.memory_mb / job.cores) if job.memory_mb else None
        context.update(
            walltime=format_hms(job.walltime_seconds),
            parallel_environment=self.parallel_environment,
            memory_per_slot_mb=per_slot,  # h_vmem is a per-slot limit
        )
        return context

    def submit_command(self, script_path: str) -> list[str]:
        return ["qsub", "-terse", script_path]

    def parse_submit_output(self, stdout: str) -> str:
        # -terse prints "123" for a job and "123.1-4:1" for an array.
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        job_id = lines[-1].split(".")[0] if lines else ""
        if not job_id.isdigit():
            raise AdapterError(self.type_name, "qsub -terse printed no job id", stdout)
        return job_id

    def element_job_ids(self, native_id: str, job: BatchJob) -> dict[int, str]:
        if not job.is_array:
            return {0: native_id}
        return {element.index: f"{native_id}.{element.index + 1}" for element in job.elements}

    def status_command(self, job_ids: Sequence[str]) -> list[str]:
        # "$user" is qstat's own placeholder for the calling user (qstat(1), -u), not a shell
        # variable; -g d lists every array task on its own line.
        return ["qstat", "-xml", "-g", "d", "-u", "$user"]

    def parse_status_output(self, stdout: str) -> dict[str, NativeJobStatus]:
        found: dict[str, NativeJobStatus] = {}
        for number, _name, state, tasks in self._job_lists(stdout):
            for job_id in self._ids(number, tasks):
                found[job_id] = NativeJobStatus(
                    job_id=job_id,
                    status=self._classify(state, job_id),
                    native_state=state,
                    reason=self._reason(state),
                    exit_code=None,
                )
        return found

    def _classify(self, state: str, job_id: str) -> TaskStatus:
        for letter in STATE_PRIORITY:
            if letter in state:
                return STATE_MAP[letter]
        return self.map_state(state, job_id)

    @staticmethod
    def _reason(state: str) -> str | None:
        reasons = [text for letter, text in _REASONS.items() if letter in state]
        return "; ".join(reasons) or None

    def _job_lists(self, stdout: str) -> list[tuple[str, str, str, str | None]]:
        """(job number, name, state, tasks) of every job_list element in qstat's XML."""
        if not stdout.strip():
            return []
        try:
            root = ET.fromstring(stdout)
        except ET.ParseError as exc:
            problem = f"qstat -xml output is not XML ({exc})"
            raise AdapterError(self.type_name, problem, stdout) from None
        rows = []
        for node in root.iter():
            if _local(node.tag) != "job_list":
                continue
            fields = {_local(child.tag): (child.text or "").strip() for child in node}
            number = fields.get("JB_job_number", "")
            if not number.isdigit():
                raise AdapterError(self.type_name, "job_list without JB_job_number", stdout)
            rows.append(
                (
                    number,
                    fields.get("JB_name", ""),
                    fields.get("state", ""),
                    fields.get("tasks") or None,
                )
            )
        return rows

    def _ids(self, number: str, tasks: str | None) -> list[str]:
        if tasks is None:
            return [number]
        ids = []
        for part in tasks.split(","):
            match = _TASKS_RE.match(part.strip())
            if not match:
                raise AdapterError(self.type_name, f"unexpected task range {tasks!r}", tasks)
            first, last, step = match.groups()
            ids.extend(
                f"{number}.{task}"
                for task in range(int(first), int(last or first) + 1, int(step or 1))
            )
        return ids

    def cancel_command(self, job_ids: Sequence[str]) -> list[str]:
        return ["qdel", *job_ids]

    def find_jobs_by_name_command(self, name: str) -> list[str]:
        return ["qstat", "-xml", "-u", "$user"]

    def parse_find_jobs_output(self, stdout: str, name: str) -> list[str]:
        ids: list[str] = []
        for number, job_name, _state, _tasks in self._job_lists(stdout):
            if job_name == name and number not in ids:
                ids.append(number)
        return ids

    def version_command(self) -> list[str]:
        return ["qstat", "-help"]

    def queue_check_command(self, queue: str) -> list[str]:
        return ["qconf", "-sq", queue]


def _local(tag: str) -> str:
    """Tag name without an XML namespace."""
    return tag.rsplit("}", 1)[-1]
