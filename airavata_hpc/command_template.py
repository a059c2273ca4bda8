"""Rendering an experiment's ``command_template`` for one parameter set.

Templates are written by users, so they render in Jinja's immutable sandbox, and every value
is shell-quoted on its way into the command (the same ``finalize`` hook as the batch scripts,
without their ``raw`` escape): ``{{ x }}`` with the value ``$(touch /tmp/pwned); rm -rf ~``
yields one literal argument. Filters still see the raw values (``{{ x | upper }}``); only the
output of each ``{{ }}`` is quoted, so placeholders must not be put inside quotes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from airavata_hpc.scripts import ScriptTemplateError, shell_finalize

#: Longest command template accepted, in characters.
MAX_COMMAND_TEMPLATE = 64 * 1024


class TemplateError(ValueError):
    """The template does not parse or render; the message is fit to show the user."""


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, finalize=shell_finalize, autoescape=False
    )


@functools.lru_cache(maxsize=256)
def _parse(template: str) -> jinja2.nodes.Template:
    if len(template) > MAX_COMMAND_TEMPLATE:
        raise TemplateError(
            f"command template is {len(template)} characters; the limit is {MAX_COMMAND_TEMPLATE}"
        )
    try:
        return _environment().parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"command template line {exc.lineno}: {exc.message}") from None


@functools.lru_cache(maxsize=256)
def template_placeholders(template: str) -> frozenset[str]:
    """The names a template reads, i.e. the values every parameter set must provide."""
    try:
        return frozenset(jinja2.meta.find_undeclared_variables(_parse(template)))
    except jinja2.TemplateError as exc:  # e.g. an unknown filter, found while compiling
        raise TemplateError(f"command template: {exc}") from None


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> jinja2.Template:
    _parse(template)
    return _environment().from_string(template)


def render_command(template: str, values: Mapping[str, object]) -> str:
    """The shell command for one parameter set, every value shell-quoted.

    Raises :class:`TemplateError` naming a placeholder missing from ``values``, a syntax error
    or anything the sandbox refuses (``{{ ''.__class__ }}``).
    """
    missing = sorted(template_placeholders(template) - set(values))
    if missing:
        raise TemplateError(f"no value for placeholder(s): {', '.join(missing)}")
    try:
        rendered = _compiled(template).render(**values)
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"command template not allowed: {exc}") from None
    except (jinja2.TemplateError, ScriptTemplateError) as exc:
        raise TemplateError(f"command template failed: {exc}") from None
    if not rendered.strip():
        raise TemplateError("command template rendered to an empty command")
    return rendered
