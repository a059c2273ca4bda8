"""Rendering an experiment's ``command_template`` for one parameter set.

Templates are written by users, so they render in jinja2's sandbox, and every parameter value
is shell-quoted on its way into the command: ``{{ x }}`` with the value
``$(touch /tmp/pwned); rm -rf ~`` yields one literal argument. Filters and expressions still
work on the raw values (``{{ x | upper }}``); only the final output of each ``{{ }}`` is quoted.
"""

from __future__ import annotations

import shlex
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment


class TemplateError(ValueError):
    """The template does not parse or render; the message says where and why."""


def _quote(value: Any) -> str:
    return shlex.quote(str(value))


_ENVIRONMENT = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    finalize=_quote,
    autoescape=False,
    keep_trailing_newline=False,
)


@lru_cache(maxsize=256)
def _compiled(template: str) -> jinja2.Template:
    try:
        return _ENVIRONMENT.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None


@lru_cache(maxsize=256)
def template_placeholders(template: str) -> frozenset[str]:
    """The names a template reads, i.e. the values every parameter set must provide."""
    try:
        parsed = _ENVIRONMENT.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None
    return frozenset(meta.find_undeclared_variables(parsed))


def render_command(template: str, values: dict[str, str]) -> str:
    """The shell command for one parameter set, every value shell-quoted."""
    try:
        return _compiled(template).render(values)
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"not allowed in a command template: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(str(exc)) from None
    except jinja2.TemplateError as exc:
        raise TemplateError(str(exc)) from None
