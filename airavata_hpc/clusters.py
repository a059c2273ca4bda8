"""Cluster configuration for HPC admins: one YAML file per cluster in ``DIR/clusters.d/``.

:func:`load_clusters` reads every ``*.yaml`` directly in ``clusters.d`` (not sub-directories,
so ``examples/`` is never loaded) into frozen :class:`ClusterConfig` objects, or gives the
built-in local cluster when no directory is configured. Every problem is a
:class:`ClusterConfigError` naming the file, the field and what is wrong with it; unknown fields
are errors too, so a typo never silently falls back to a default. ``config/README.md`` describes
the fields for admins.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from airavata_hpc.adapters import BatchAdapter, adapter_names, get_adapter
from airavata_hpc.adapters.base import DIRECTIVE_VALUE_RE, JOB_NAME_RE, REMOTE_PATH_RE
from airavata_hpc.adapters.pbs import FLAVORS

log = logging.getLogger(__name__)

CLUSTERS_SUBDIR = "clusters.d"
LOCAL_CLUSTER_NAME = "local"
#: Keep well below OpenSSH's default MaxSessions of 10 (channels per connection).
MAX_SSH_CHANNELS = 8

_DURATION_RE = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})$")
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", re.IGNORECASE)
_MEMORY_UNITS = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


class ClusterConfigError(ValueError):
    """A cluster file is invalid; the message names the file, the field and the problem."""

    def __init__(self, source: str, field: str | None, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: field '{field}'" if field else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster as its admin configured it (see ``config/README.md``).

    Durations are seconds, memory is MB. ``queue`` is the partition (Slurm) or queue (PBS,
    SGE); the YAML may call it either. ``host`` is None for a cluster run on this machine
    without SSH. ``source`` is the file the cluster came from.
    """

    name: str
    type: str
    work_dir: str
    host: str | None = None
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    insecure_skip_host_key_check: bool = False
    queue: str | None = None
    account: str | None = None
    max_queued_jobs: int = 1000
    max_array_size: int = 1000
    array_throttle: int | None = None
    poll_interval: float = 10.0
    cost_per_core_hour: float = 0.0
    compute_types: tuple[str, ...] = ("cpu",)
    max_walltime: int | None = None
    cores_per_node: int = 1
    memory_per_node: int | None = None
    template: str | None = None
    environment_setup: tuple[str, ...] = ()
    flavor: str | None = None
    parallel_environment: str | None = None
    ssh_max_channels: int = 4
    source: str = "<built-in>"

    @property
    def partition(self) -> str | None:
        return self.queue

    @property
    def is_remote(self) -> bool:
        """True when commands go over SSH (a host is configured)."""
        return self.host is not None

    def adapter_options(self) -> dict[str, Any]:
        """Constructor options for this cluster's adapter."""
        if self.type == "pbs":
            return {"flavor": self.flavor or "pbspro"}
        if self.type == "sge" and self.parallel_environment:
            return {"parallel_environment": self.parallel_environment}
        if self.type == "local":
            return {"cores": self.cores_per_node}
        return {}

    def adapter(self) -> BatchAdapter:
        """A new adapter for this cluster."""
        return get_adapter(self.type, **self.adapter_options())

    def template_source(self) -> str | None:
        """The admin's batch template (read from ``template``), or None for the built-in one."""
        if self.template is None:
            return None
        try:
            return Path(self.template).read_text(encoding="utf-8")
        except OSError as exc:
            raise ClusterConfigError(self.source, "template", f"cannot read: {exc}") from exc


# ---------------------------------------------------------------------------- field parsers


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _name(value: object) -> str:
    text = _text(value)
    if not JOB_NAME_RE.match(text):
        raise ValueError(
            "use letters, digits, '_', '.' and '-' (at most 63, letter or digit first)"
        )
    return text


def _type(value: object) -> str:
    text = _text(value)
    if text not in adapter_names():
        raise ValueError(f"unknown type {text!r}; known types: {', '.join(adapter_names())}")
    return text


def _directive_value(value: object) -> str:
    text = _text(value)
    if not DIRECTIVE_VALUE_RE.match(text):
        raise ValueError(f"must match {DIRECTIVE_VALUE_RE.pattern} (no blanks or quotes)")
    return text


def _integer(low: int, high: int | None = None) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number")
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise ValueError(f"must be {bounds}, got {value}")
        return value

    return parse


def _number(low: float) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        if value < low:
            raise ValueError(f"must be >= {low}, got {value}")
        return float(value)

    return parse


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _duration(value: object) -> int:
    """Seconds, or ``[D-]HH:MM:SS`` as batch systems write walltimes."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION_RE.match(value.strip())):
        days, hours, minutes, secs = (int(part or 0) for part in match.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        raise ValueError("must be seconds or [D-]HH:MM:SS, e.g. 86400 or 1-00:00:00")
    if seconds < 1:
        raise ValueError("must be at least one second")
    return seconds


def _memory(value: object) -> int:
    """MB, or a number with a unit: 512M, 64G, 1T."""
    if isinstance(value, int) and not isinstance(value, bool):
        megabytes = float(value)
    elif isinstance(value, str) and (match := _MEMORY_RE.match(value.strip())):
        megabytes = float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()]
    else:
        raise ValueError("must be MB or a size with a unit, e.g. 4000 or 64G")
    if megabytes < 1:
        raise ValueError("must be at least 1 MB")
    return int(megabytes)


def _labels(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list, e.g. [cpu, gpu]")
    return tuple(_text(item) for item in value)


def _lines(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.splitlines())
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("must be a list of shell lines")
    for item in value:
        if "\n" in item or "\r" in item:
            raise ValueError("each list item must be one line")
    return tuple(value)


def _flavor(value: object) -> str:
    text = _text(value)
    if text not in FLAVORS:
        raise ValueError(f"unknown flavor {text!r}; known flavors: {', '.join(FLAVORS)}")
    return text


#: YAML field -> parser. "partition" is another name for "queue".
_PARSERS: dict[str, Callable[[object], Any]] = {
    "name": _name,
    "type": _type,
    "host": _text,
    "port": _integer(1, 65535),
    "user": _text,
    "key_file": _text,
    "known_hosts": _text,
    "insecure_skip_host_key_check": _boolean,
    "work_dir": _text,
    "queue": _directive_value,
    "partition": _directive_value,
    "account": _directive_value,
    "max_queued_jobs": _integer(1),
    "max_array_size": _integer(1),
    "array_throttle": _integer(1),
    "poll_interval": _number(0.2),
    "cost_per_core_hour": _number(0.0),
    "compute_types": _labels,
    "max_walltime": _duration,
    "cores_per_node": _integer(1),
    "memory_per_node": _memory,
    "template": _text,
    "environment_setup": _lines,
    "flavor": _flavor,
    "parallel_environment": _directive_value,
    "ssh_max_channels": _integer(1, MAX_SSH_CHANNELS),
}
_REQUIRED = ("name", "type")
_ONLY_FOR = {"flavor": "pbs", "parallel_environment": "sge"}


def parse_cluster(data: object, source: str, base_dir: Path | None = None) -> ClusterConfig:
    """Validate one cluster's mapping (as read from ``source``) into a ClusterConfig.

    Relative ``key_file``, ``known_hosts`` and ``template`` paths are taken relative to
    ``base_dir`` (the file's directory).
    """
    if not isinstance(data, Mapping):
        raise ClusterConfigError(source, None, "must be a mapping of field: value")
    known = sorted(_PARSERS)
    values: dict[str, Any] = {}
    for key, raw in data.items():
        parser = _PARSERS.get(str(key))
        if parser is None:
            raise ClusterConfigError(
                source, str(key), f"unknown field; known fields: {', '.join(known)}"
            )
        if raw is None:
            continue
        try:
            values[str(key)] = parser(raw)
        except ValueError as exc:
            raise ClusterConfigError(source, str(key), str(exc)) from None
    for key in _REQUIRED:
        if key not in values:
            raise ClusterConfigError(source, key, "is required")
    return _finish(values, source, base_dir)


def _finish(values: dict[str, Any], source: str, base_dir: Path | None) -> ClusterConfig:
    kind = values["type"]
    for key, only in _ONLY_FOR.items():
        if key in values and kind != only:
            raise ClusterConfigError(source, key, f"applies to type {only} only, not {kind}")
    if "partition" in values:
        if "queue" in values:
            raise ClusterConfigError(source, "partition", "give partition or queue, not both")
        values["queue"] = values.pop("partition")

    remote = "host" in values
    if remote and values.get("poll_interval", 10.0) < 1.0:
        # Status commands load the cluster's controller for every user; admins ask for one
        # batched call every few seconds at most. Only the local runner may poll faster.
        raise ClusterConfigError(source, "poll_interval", "must be >= 1.0 for a remote cluster")
    if not remote and kind != "local":
        raise ClusterConfigError(source, "host", f"is required for type {kind}")
    if remote and "user" not in values:
        raise ClusterConfigError(source, "user", "is required when host is set")
    if not remote:
        values.setdefault("user", getpass.getuser())
        values.setdefault("cores_per_node", os.cpu_count() or 1)
    if values.get("insecure_skip_host_key_check") and "known_hosts" in values:
        raise ClusterConfigError(
            source, "insecure_skip_host_key_check", "contradicts known_hosts; drop one"
        )

    if "work_dir" not in values:
        raise ClusterConfigError(source, "work_dir", "is required")
    work_dir = values["work_dir"]
    if not remote:
        work_dir = os.path.expanduser(work_dir)
    work_dir = work_dir.rstrip("/") or "/"
    if not REMOTE_PATH_RE.match(work_dir):
        hint = "" if not remote else " ('~' is not expanded on remote hosts)"
        raise ClusterConfigError(
            source, "work_dir", f"must be an absolute path of letters, digits and '_.+@/-'{hint}"
        )
    values["work_dir"] = work_dir

    for key in ("key_file", "known_hosts", "template"):
        if key in values:
            path = Path(os.path.expanduser(values[key]))
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            if not path.is_file():
                raise ClusterConfigError(source, key, f"no such file: {path}")
            values[key] = os.path.normpath(path)

    if values.get("insecure_skip_host_key_check"):
        log.warning(
            "cluster %s (%s): insecure_skip_host_key_check is on; SSH host keys are not verified",
            values["name"],
            source,
        )
    return ClusterConfig(source=source, **values)


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/airavata-hpc`` or ``~/.local/share/airavata-hpc``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "airavata-hpc"


def default_local_cluster(work_dir: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """The built-in cluster used when no configuration directory is given."""
    path = Path(work_dir) if work_dir is not None else default_data_dir() / "local"
    data = {"name": LOCAL_CLUSTER_NAME, "type": "local", "work_dir": str(path.resolve())}
    return parse_cluster(data, "<built-in local cluster>")


def load_clusters(
    config_dir: str | os.PathLike[str] | None = None,
    *,
    default_work_dir: str | os.PathLike[str] | None = None,
) -> list[ClusterConfig]:
    """Every cluster in ``config_dir/clusters.d/*.yaml``, sorted by file name.

    Without ``config_dir`` the result is the built-in local cluster (with ``default_work_dir``
    as its work_dir, if given).
    """
    if config_dir is None:
        return [default_local_cluster(default_work_dir)]
    directory = Path(config_dir) / CLUSTERS_SUBDIR
    if not directory.is_dir():
        raise ClusterConfigError(str(directory), None, "is not a directory")
    files = sorted(path for path in directory.glob("*.yaml") if path.is_file())
    if not files:
        raise ClusterConfigError(str(directory), None, "holds no *.yaml cluster files")
    clusters: list[ClusterConfig] = []
    seen: dict[str, str] = {}
    for path in files:
        cluster = _load_file(path)
        if cluster.name in seen:
            raise ClusterConfigError(
                str(path), "name", f"{cluster.name!r} is already defined in {seen[cluster.name]}"
            )
        seen[cluster.name] = str(path)
        clusters.append(cluster)
    log.info(
        "loaded %d cluster(s) from %s: %s",
        len(clusters),
        directory,
        ", ".join(c.name for c in clusters),
    )
    return clusters


def _load_file(path: Path) -> ClusterConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClusterConfigError(str(path), None, f"cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ClusterConfigError(str(path), None, f"is not valid YAML: {exc}") from None
    return parse_cluster(data, str(path), base_dir=path.parent)


#: The YAML field names, for documentation and tests.
FIELD_NAMES: tuple[str, ...] = tuple(sorted(_PARSERS))
