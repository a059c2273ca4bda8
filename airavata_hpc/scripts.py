"""Rendering of batch scripts, quoting every value for the shell.

The batch-script environment renders ``job_templates/<type>.sh.j2`` (or an admin's override)
for the adapters. Its ``finalize`` hook (:func:`shell_finalize`, shared with the users' command
templates in :mod:`airavata_hpc.command_template`) passes every ``{{ value }}`` through
:func:`shlex.quote`; a template opts out explicitly with ``|raw`` (for the admin-written
``environment_setup`` and ``extra_directives`` lines). Quoting is the default, so forgetting it
is impossible. ``StrictUndefined``: a missing value is an error, never an empty string.

The element status file the batch scripts write (``<task_dir>/status``) is defined here too,
with :func:`parse_element_status` for the caller that decides completion from it.
"""

from __future__ import annotations

import functools
import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

log = logging.getLogger(__name__)

#: Files every element writes in its task_dir.
STATUS_FILE = "status"
STDOUT_FILE = "stdout"
STDERR_FILE = "stderr"

_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "job_templates"


class ScriptTemplateError(Exception):
    """A batch template failed to render (syntax error, undefined variable)."""


class Raw(str):
    """A string the finalize hook leaves unquoted (made by the ``raw`` filter)."""

    __slots__ = ()


def _raw_filter(value: object) -> Raw:
    return Raw("" if value is None else str(value))


def shell_finalize(value: object) -> str:
    """Jinja ``finalize`` hook: shell-quote everything except :class:`Raw` strings."""
    if isinstance(value, Raw):
        return value
    if value is None:
        raise ScriptTemplateError("a template printed None; test optional values with {% if %}")
    # str() of a StrictUndefined raises UndefinedError here, which is what we want.
    return shlex.quote(str(value))


def _template_dir() -> Path:
    """Where the built-in templates are: the installed ``airavata_hpc.job_templates`` package."""
    try:
        from airavata_hpc import job_templates
    except ImportError:  # pragma: no cover - only when the package is not installed
        return _TEMPLATE_DIR
    return Path(job_templates.__file__).resolve().parent


@functools.cache
def _batch_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_template_dir())),
        undefined=jinja2.StrictUndefined,
        finalize=shell_finalize,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["raw"] = _raw_filter
    return env


def render_batch_script(
    template_name: str, context: Mapping[str, Any], template_source: str | None = None
) -> str:
    """Render a batch template by name, or ``template_source`` (an admin override) instead.

    An override may ``{% include "_element.sh.j2" %}`` like the built-in templates do.
    """
    env = _batch_environment()
    label = template_name if template_source is None else f"override of {template_name}"
    try:
        if template_source is None:
            template = env.get_template(template_name)
        else:
            template = env.from_string(template_source)
        return template.render(**context)
    except jinja2.TemplateError as exc:
        raise ScriptTemplateError(f"batch template {label}: {exc}") from exc


@dataclass(frozen=True)
class ElementStatus:
    """The content of an element's ``status`` file.

    ``end`` and ``exit_code`` are None while the element runs; a file that has ``start`` but
    never gets ``end`` belongs to an element killed before its wrapper could write (SIGKILL,
    node failure); the batch system's final state then says why.
    """

    start: int | None
    host: str | None
    end: int | None
    exit_code: int | None

    @property
    def finished(self) -> bool:
        return self.end is not None and self.exit_code is not None


def parse_element_status(text: str | None) -> ElementStatus | None:
    """Read a status file's ``key=value`` lines; None for a missing file.

    Unknown keys are ignored (later wrappers may add some); malformed numbers count as absent.
    """
    if text is None:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return ElementStatus(
        start=_int_or_none(fields.get("start")),
        host=fields.get("host") or None,
        end=_int_or_none(fields.get("end")),
        exit_code=_int_or_none(fields.get("exit_code")),
    )


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None
