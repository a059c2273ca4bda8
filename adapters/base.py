"""The contract every batch-system adapter implements, and the data it works on.

An adapter is a pure translator between our model and one batch system's command line. It
builds argv lists and batch scripts and parses command output; it never runs anything, opens a
file or talks to the network. All I/O happens in :mod:`airavata_hpc.remote`, so every adapter can
be tested on captured output from real systems.

The flow a caller drives, with ``a`` an adapter and ``run`` a runner from ``remote``::

    script = a.render_script(job)                      # write it to job.script_path
    native = a.parse_submit_output(run(a.submit_command(job.script_path)).stdout)
    ids = a.element_job_ids(native, job)               # element index -> id as status shows it
    out = run(a.status_command(all_active_ids), check=False)
    if a.status_output_usable(out.exit_status, out.stderr):
        states = a.parse_status_output(out.stdout)     # id -> NativeJobStatus
    run(a.cancel_command(ids_to_cancel), check=False)

Rules of the contract:

* One status command covers every active job of the cluster: batch systems ask clients not to
  poll job by job.
* A job missing from the parsed status is simply absent from the returned dict. Absent never
  means finished: batch systems forget finished jobs (Slurm after ``MinJobAge``, SGE at once).
  The caller decides from the element's ``status`` file, which the batch script writes.
* Completion is decided by the caller from that file (see :mod:`airavata_hpc.scripts`); the
  scheduler's own final state and exit code are advisory and used when the file never got an end
  line (the job was killed before the wrapper could write it).
* ``cancel_command`` may exit non-zero when some ids are already gone; poll again to confirm.
* ``queue_check_command`` exits 0 and prints something when the queue exists (see
  :meth:`BatchAdapter.queue_exists`).
* ``find_jobs_by_name_command`` + ``parse_find_jobs_output`` return the native ids (as
  :meth:`BatchAdapter.parse_submit_output` would have) of jobs still known to the batch system
  under a name. The caller puts a submission id into ``BatchJob.name`` so that, after a crash
  between submit and recording the id, the job can be found again.

Each adapter maps native states to :class:`~airavata_hpc.states.TaskStatus` in ONE constant,
``STATE_MAP``, next to a pointer to the scheduler's documentation.
"""

from __future__ import annotations

import logging
import posixpath
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from airavata_hpc.states import TaskStatus

log = logging.getLogger(__name__)

#: Job names: they go into directive lines and must survive every batch system's parser.
#: PBS wants an alphanumeric first character; SGE forbids ``/:@\\*?``; 63 fits everyone.
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: Directive values (partition, account, ...): no blanks, quotes or shell metacharacters.
DIRECTIVE_VALUE_RE = re.compile(r"^[A-Za-z0-9_.@+:=,/-]+$")
#: Absolute remote paths that every batch system's directive parser takes unquoted. ``%`` is out
#: because Slurm expands it in output paths, ``$`` because SGE does.
REMOTE_PATH_RE = re.compile(r"^/[A-Za-z0-9_.+@/-]*$")


class AdapterError(Exception):
    """A batch system said something we cannot read (unexpected submit or status output)."""

    def __init__(self, adapter: str, problem: str, output: str = "") -> None:
        self.adapter = adapter
        self.problem = problem
        self.output = output
        snippet = output if len(output) <= 300 else output[:300] + "..."
        super().__init__(f"{adapter}: {problem}" + (f"; output was: {snippet!r}" if output else ""))


@dataclass(frozen=True)
class JobElement:
    """One parameter set of a submission: its array index, directory and shell command."""

    index: int
    task_dir: str
    command: str

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"element index must be >= 0, got {self.index}")
        _check_path("task_dir", self.task_dir)
        if "\0" in self.command or not self.command.strip():
            raise ValueError(f"element {self.index}: command must be non-empty text without NUL")


@dataclass(frozen=True)
class BatchJob:
    """One batch submission: a plain job (one element) or a job array (several).

    ``name`` is the native job name; put a submission id in it (``ah-3f2a...``) so that jobs
    can be found by name after a crash. ``work_dir`` is the submission's remote directory: the
    script, scheduler logs and one sub-directory per element live there. Elements must have the
    indices 0..n-1 in order; the batch script picks its element by the array index.
    """

    name: str
    work_dir: str
    elements: tuple[JobElement, ...]
    walltime_seconds: int
    cores: int = 1
    nodes: int = 1
    memory_mb: int | None = None
    gpus: int = 0
    partition: str | None = None
    account: str | None = None
    throttle: int | None = None
    environment_setup: tuple[str, ...] = ()
    extra_directives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not JOB_NAME_RE.match(self.name):
            raise ValueError(
                f"job name {self.name!r} must match {JOB_NAME_RE.pattern} "
                "(letters, digits, '_', '.', '-'; at most 63 characters)"
            )
        _check_path("work_dir", self.work_dir)
        if not self.elements:
            raise ValueError("a batch job needs at least one element")
        indices = [e.index for e in self.elements]
        if indices != list(range(len(indices))):
            raise ValueError(f"element indices must be 0..{len(indices) - 1} in order: {indices}")
        for label, number, low in (
            ("walltime_seconds", self.walltime_seconds, 1),
            ("cores", self.cores, 1),
            ("nodes", self.nodes, 1),
            ("gpus", self.gpus, 0),
        ):
            if number < low:
                raise ValueError(f"{label} must be >= {low}, got {number}")
        if self.memory_mb is not None and self.memory_mb < 1:
            raise ValueError(f"memory_mb must be >= 1, got {self.memory_mb}")
        if self.throttle is not None and self.throttle < 1:
            raise ValueError(f"throttle must be >= 1, got {self.throttle}")
        for label, value in (("partition", self.partition), ("account", self.account)):
            if value is not None and not DIRECTIVE_VALUE_RE.match(value):
                raise ValueError(f"{label} {value!r} must match {DIRECTIVE_VALUE_RE.pattern}")
        for line in (*self.environment_setup, *self.extra_directives):
            if "\n" in line or "\r" in line or "\0" in line:
                raise ValueError(f"setup and directive lines must be single lines: {line!r}")

    @property
    def is_array(self) -> bool:
        return len(self.elements) > 1

    @property
    def script_path(self) -> str:
        """Where the caller writes the script: ``<work_dir>/<name>.sh``.

        The local adapter finds its jobs by this file name after a restart.
        """
        return posixpath.join(self.work_dir, f"{self.name}.sh")


@dataclass(frozen=True)
class NativeJobStatus:
    """What the batch system says about one job or array element."""

    job_id: str
    status: TaskStatus
    native_state: str
    reason: str | None = None
    exit_code: int | None = None


def _check_path(label: str, path: str) -> None:
    if not REMOTE_PATH_RE.match(path) or "/../" in f"{path}/":
        raise ValueError(
            f"{label} {path!r} must be an absolute path of letters, digits and '_.+@/-' "
            "(batch directive parsers do not all honour quoting)"
        )


def format_hms(seconds: int) -> str:
    """``HH:MM:SS`` with hours allowed past 24, as PBS and SGE take walltimes."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def clean_reason(reason: str | None) -> str | None:
    """Normalise a scheduler's reason text: blank, ``None`` or ``(null)`` become ``None``."""
    if reason is None:
        return None
    text = reason.strip()
    return None if text in ("", "None", "(null)", "n/a") else text


class BatchAdapter(ABC):
    """Builds the commands for one batch system and reads their output. See the module doc."""

    #: Registry name, also the cluster ``type`` in the admin YAML.
    type_name: ClassVar[str]
    #: File in :mod:`airavata_hpc.job_templates` rendered by :meth:`render_script`.
    template_name: ClassVar[str]
    #: Native state -> TaskStatus; overridden by every adapter.
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]]
    #: Exit codes whose meaning this adapter's scripts fix (e.g. the local runner's walltime
    #: ``timeout`` exits 124); the engine adds the text to the task's error.
    EXIT_REASONS: ClassVar[Mapping[int, str]] = {}
    #: Patterns of submit errors that reject the request itself (unknown partition, limits):
    #: trying again cannot help. Any other refusal may be the cluster being unwell (munge
    #: stopped, controller down) and is retried; see :meth:`submission_rejected`.
    REJECTION_PATTERNS: ClassVar[tuple[str, ...]] = ()

    def render_script(self, job: BatchJob, template_source: str | None = None) -> str:
        """The batch script for ``job``; ``template_source`` replaces the built-in template."""
        from airavata_hpc.scripts import render_batch_script

        context = self.script_context(job)
        return render_batch_script(self.template_name, context, template_source=template_source)

    def script_context(self, job: BatchJob) -> dict[str, Any]:
        """Variables the template sees; adapters add their directive values to these."""
        return {
            "job": job,
            "name": job.name,
            "work_dir": job.work_dir,
            "elements": job.elements,
            "is_array": job.is_array,
            "last_index": len(job.elements) - 1,
            "environment_setup": job.environment_setup,
            "extra_directives": job.extra_directives,
        }

    def submission_rejected(self, stderr: str) -> bool:
        """True when a failed submit command's ``stderr`` says the request itself is invalid."""
        text = stderr.lower()
        return any(pattern.lower() in text for pattern in self.REJECTION_PATTERNS)

    @abstractmethod
    def submit_command(self, script_path: str) -> list[str]:
        """argv that submits the script; its stdout goes to :meth:`parse_submit_output`."""

    @abstractmethod
    def parse_submit_output(self, stdout: str) -> str:
        """The native id of the submission (array id for arrays); AdapterError if unreadable."""

    @abstractmethod
    def element_job_ids(self, native_id: str, job: BatchJob) -> dict[int, str]:
        """Element index -> the id under which :meth:`parse_status_output` reports it."""

    @abstractmethod
    def status_command(self, job_ids: Sequence[str]) -> list[str]:
        """ONE argv reporting on all the given active jobs (some adapters list all of ours)."""

    def status_output_usable(self, exit_status: int, stderr: str) -> bool:
        """Whether a status command that exited with ``exit_status`` still answered.

        Some systems exit non-zero when one of several ids is unknown yet report the others.
        A False here is a monitoring failure: the caller retries later and fails no task.
        """
        return exit_status == 0

    @abstractmethod
    def parse_status_output(self, stdout: str) -> dict[str, NativeJobStatus]:
        """Job id -> status for every job in the output; AdapterError if unreadable."""

    @abstractmethod
    def cancel_command(self, job_ids: Sequence[str]) -> list[str]:
        """ONE argv cancelling all the given jobs or elements."""

    @abstractmethod
    def find_jobs_by_name_command(self, name: str) -> list[str]:
        """argv listing jobs called ``name`` (crash recovery)."""

    @abstractmethod
    def parse_find_jobs_output(self, stdout: str, name: str) -> list[str]:
        """Native ids (as :meth:`parse_submit_output` returns them) of the jobs called ``name``."""

    @abstractmethod
    def version_command(self) -> list[str]:
        """argv printing the batch system's version."""

    def parse_version_output(self, stdout: str) -> str:
        """The version line of :meth:`version_command`'s output."""
        for line in stdout.splitlines():
            if line.strip():
                return line.strip()
        return "unknown"

    @abstractmethod
    def queue_check_command(self, queue: str) -> list[str]:
        """argv that succeeds and prints something only if ``queue`` (partition) exists."""

    def queue_exists(self, exit_status: int, stdout: str) -> bool:
        """Reads the result of :meth:`queue_check_command`."""
        return exit_status == 0 and bool(stdout.strip())

    def map_state(self, native_state: str, job_id: str) -> TaskStatus:
        """Look ``native_state`` up in ``STATE_MAP``; unknown states count as still running.

        An unknown state is never taken as final: the element's status file decides.
        """
        status = self.STATE_MAP.get(native_state)
        if status is None:
            log.warning(
                "%s job %s: unknown native state %r, treating it as running",
                self.type_name,
                job_id,
                native_state,
            )
            return TaskStatus.RUNNING
        return status
