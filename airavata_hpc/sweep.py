"""Sweep files: the YAML a researcher writes by hand to describe a parameter sweep.

A sweep file is checked here, on the researcher's machine, before anything is sent, and every
mistake is reported with the line it is on (the document is composed into YAML nodes, whose
marks carry line numbers). The result is the body of ``POST /experiments``
(``CreateExperimentRequest``): one parameter set per combination, every value a string.

A short example::

    name: integral-scan
    project: demo
    command: python3 integrate.py --a {{ a }} --n {{ n }}
    parameters:
      grid:
        a: {start: 0.5, stop: 2.0, step: 0.5}   # 0.5, 1.0, 1.5, 2.0 (stop included)
        n: [100, 1000]
    compute: {cores: 1, walltime: 5m, max_retries: 1}
    tags: [demo]

Parameters come as a ``grid`` (the cartesian product of lists and ranges), ``zip`` groups
(lists of equal length advanced together, combined with the grid as one factor each), or an
explicit list of ``sets``. Values are passed to the command exactly as written in the file;
values computed from a range are formatted without float noise (``0.1 * 3`` gives ``0.3``).
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from airavata_hpc import command_template

#: Most parameter sets one sweep may expand to (each becomes a task on the server).
MAX_SETS = 100_000
#: Longest parameter set id accepted.
MAX_ID_LENGTH = 100

TOP_KEYS = {
    "name": "experiment name (required)",
    "project": "project id (required)",
    "description": "free text",
    "command": "command template with {{ name }} placeholders (required)",
    "output_pattern": "glob of the output files to keep",
    "parameters": "grid, zip, sets and id_format",
    "compute": "cores, nodes, memory_mb, gpus, walltime, max_retries, partition, account",
    "clusters": "allow / deny lists of cluster names",
    "compute_types": "list of cluster types (slurm, pbs, sge, local)",
    "cost_weights": "mapping of weight name to a number",
    "deadline": "ISO 8601 date-time",
    "metadata": "free-form mapping stored with the experiment",
    "tags": "list of strings",
}
PARAMETER_KEYS = ("grid", "zip", "sets", "id_format")
RANGE_KEYS = ("start", "stop", "step")
COMPUTE_KEYS = (
    "cores",
    "nodes",
    "memory_mb",
    "gpus",
    "walltime",
    "max_retries",
    "partition",
    "account",
)
CLUSTER_KEYS = ("allow", "deny")
# Names of the API's fields that people write instead of the sweep's own keys.
API_NAMES = {
    "project_id": "project",
    "command_template": "command",
    "compute_requirements": "compute",
    "allowed_compute_resources": "clusters: {allow: [...]}",
    "denied_compute_resources": "clusters: {deny: [...]}",
    "allowed_compute_types": "compute_types",
}
# Words a parameter cannot be called: the template language reads them as keywords.
RESERVED_NAMES = frozenset(
    {
        "and",
        "or",
        "not",
        "in",
        "is",
        "if",
        "else",
        "for",
        "true",
        "false",
        "none",
        "True",
        "False",
        "None",
        "loop",
        "id",
    }
)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
CLOCK_RE = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]?\d):([0-5]?\d)$")

STR = "tag:yaml.org,2002:str"
NULL = "tag:yaml.org,2002:null"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"


class SweepError(ValueError):
    """A mistake in a sweep file; ``str()`` is one line naming the file and the line."""

    def __init__(self, message: str, line: int | None = None, source: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.source = source

    def __str__(self) -> str:
        where = self.source or "sweep"
        if self.line is not None:
            where += f", line {self.line}"
        return f"{where}: {self.message}"


@dataclass
class Sweep:
    """A checked sweep: the request body, where it came from, and warnings worth showing."""

    body: dict[str, Any]
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many tasks the experiment will have (one when there are no parameters)."""
        return len(self.body.get("parameters") or []) or 1

    def commands(self, limit: int = 5) -> list[tuple[str, str]]:
        """``(set id, rendered command)`` for the first ``limit`` sets, as the server would
        render them (values shell-quoted)."""
        template = self.body["command_template"]
        sets = self.body.get("parameters") or [{"id": "default", "values": {}}]
        return [
            (s["id"], command_template.render_command(template, s["values"])) for s in sets[:limit]
        ]


def format_number(value: int | float | Decimal) -> str:
    """A number as a parameter value: integers as they are, floats in their shortest form
    without arithmetic noise (``0.30000000000000004`` becomes ``0.3``, ``1.0`` stays)."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number} is not a finite number")
    # 15 significant digits round-trip every decimal a person writes and drop the noise
    # that float arithmetic leaves in the 16th and 17th.
    text = repr(float(f"{number:.15g}"))
    return "0.0" if text == "-0.0" else text


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; :class:`SweepError` names the line of any mistake."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SweepError(f"cannot read the sweep file: {reason}", source=str(path)) from None
    return parse_sweep(text, source=path.name)


def parse_sweep(text: str, source: str = "sweep") -> Sweep:
    """Check a sweep document given as text and build the experiment request body."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise SweepError(
            f"not valid YAML: {problem}", mark.line + 1 if mark else None, source
        ) from None
    except yaml.YAMLError as exc:
        raise SweepError(f"not valid YAML: {exc}", source=source) from None
    finally:
        loader.dispose()
    if root is None:
        raise SweepError(
            "the file is empty; a sweep needs name, project and command", source=source
        )
    return _Reader(loader, source).sweep(root)


def line_of(node: Node) -> int:
    """1-based line number where a YAML node starts."""
    return node.start_mark.line + 1


# ---------------------------------------------------------------------------------------------
# Reading nodes


@dataclass
class _Factor:
    """One axis of the product: parameter names and, per step, their values."""

    names: tuple[str, ...]
    rows: list[tuple[str, ...]]


class _Reader:
    """Walks the composed document; every check raises a :class:`SweepError` with a line."""

    def __init__(self, loader: yaml.SafeLoader, source: str) -> None:
        self.loader = loader
        self.source = source
        self.warnings: list[str] = []

    def error(self, node: Node | None, message: str) -> SweepError:
        return SweepError(message, line_of(node) if node is not None else None, self.source)

    # -- generic shapes ------------------------------------------------------------------------

    def mapping(self, node: Node, where: str, known: Any = None) -> dict[str, tuple[Node, Node]]:
        """Keys of a mapping node with their key and value nodes; duplicate keys and (when
        ``known`` is given) unknown keys are errors."""
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{where} must be a mapping (key: value lines)")
        result: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == NULL:
                raise self.error(key_node, f"{where}: keys must be plain names")
            key = str(key_node.value)
            if key in result:
                first = line_of(result[key][0])
                raise self.error(
                    key_node, f"{where}: key {key!r} appears twice (first on line {first})"
                )
            if known is not None and key not in known:
                raise self.error(key_node, self._unknown_key(key, where, known))
            result[key] = (key_node, value_node)
        return result

    @staticmethod
    def _unknown_key(key: str, where: str, known: Any) -> str:
        message = f"unknown key {key!r} in {where}"
        if key in API_NAMES and where == "the sweep":
            message += f"; a sweep file writes it as {API_NAMES[key]}"
        else:
            close = difflib.get_close_matches(key, list(known), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return message + "; known keys: " + ", ".join(known)

    def sequence(self, node: Node, where: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.error(node, f"{where} must be a list")
        return list(node.value)

    def scalar(self, node: Node, where: str) -> Any:
        if not isinstance(node, ScalarNode):
            raise self.error(node, f"{where} must be a single value, not a list or mapping")
        return self.loader.construct_object(node)

    def string(self, node: Node, where: str, empty: bool = False) -> str:
        if not isinstance(node, ScalarNode) or node.tag == NULL:
            raise self.error(node, f"{where} must be text")
        text = str(node.value)
        if not empty and not text.strip():
            raise self.error(node, f"{where} must not be empty")
        return text

    def integer(self, node: Node, where: str, low: int, high: int | None = None) -> int:
        value = self.scalar(node, where)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(node, f"{where} must be a whole number, got {node.value!r}")
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise self.error(node, f"{where} must be {bound}, got {value}")
        return value

    def number(self, node: Node, where: str) -> int | float:
        value = self.scalar(node, where)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(node, f"{where} must be a number, got {node.value!r}")
        if not math.isfinite(value):
            raise self.error(node, f"{where} must be a finite number")
        return value

    def strings(self, node: Node, where: str) -> list[str]:
        items = self.sequence(node, where)
        return [self.string(item, f"{where}[{index}]") for index, item in enumerate(items)]

    def value_text(self, node: Node, where: str) -> str:
        """A parameter value: the scalar's text exactly as written in the file."""
        if not isinstance(node, ScalarNode):
            raise self.error(node, f"{where} must be a single value, not a list or mapping")
        if node.tag == NULL:
            raise self.error(node, f"{where} is empty; write '' for an empty string")
        return str(node.value)

    def plain_data(self, node: Node) -> Any:
        """A free-form subtree (metadata) as JSON-ready data."""
        return _jsonable(self.loader.construct_object(node, deep=True))

    # -- the document --------------------------------------------------------------------------

    def sweep(self, root: Node) -> Sweep:
        keys = self.mapping(root, "the sweep", TOP_KEYS)
        for required in ("name", "project", "command"):
            if required not in keys:
                raise self.error(
                    root, f"{required!r} is missing; a sweep needs name, project and command"
                )
        body: dict[str, Any] = {
            "name": self._name(keys["name"][1]),
            "project_id": self.string(keys["project"][1], "project"),
            "command_template": self.string(keys["command"][1], "command").strip(),
        }
        for key in ("description", "output_pattern"):
            if key in keys:
                body[key] = self.string(keys[key][1], key, empty=True)

        sets = self.parameters(keys["parameters"]) if "parameters" in keys else []
        self._check_placeholders(
            body["command_template"], keys["command"][1], sets, keys.get("parameters")
        )
        if sets:
            body["parameters"] = [
                {"id": set_id, "values": values} for set_id, values, _node in sets
            ]

        if "compute" in keys:
            body["compute_requirements"] = self.compute(keys["compute"][1])
        if "clusters" in keys:
            body.update(self.clusters(keys["clusters"][1]))
        if "compute_types" in keys:
            body["allowed_compute_types"] = self.strings(keys["compute_types"][1], "compute_types")
        if "cost_weights" in keys:
            body["cost_weights"] = self.cost_weights(keys["cost_weights"][1])
        if "deadline" in keys:
            body["deadline"] = self.deadline(keys["deadline"][1])
        metadata = self.metadata(keys.get("metadata"), keys.get("tags"))
        if metadata:
            body["metadata"] = metadata
        return Sweep(body=body, source=self.source, warnings=self.warnings)

    def _name(self, node: Node) -> str:
        name = self.string(node, "name").strip()
        if len(name) > 255:
            raise self.error(node, f"name is {len(name)} characters long; at most 255")
        return name

    # -- parameters ----------------------------------------------------------------------------

    def parameters(self, entry: tuple[Node, Node]) -> list[tuple[str, dict[str, str], Node]]:
        """``(set id, values, node to blame)`` for every parameter set, in order; ``entry`` is
        the ``parameters`` key and value."""
        key_node, node = entry
        keys = self.mapping(node, "parameters", PARAMETER_KEYS)
        if "sets" in keys:
            for other in ("grid", "zip", "id_format"):
                if other in keys:
                    raise self.error(
                        keys[other][0],
                        f"parameters: {other!r} cannot be "
                        "combined with 'sets'; list every set under 'sets' instead",
                    )
            return self.explicit_sets(keys["sets"])
        if "grid" not in keys and "zip" not in keys:
            raise self.error(key_node, "parameters needs 'grid', 'zip' or 'sets'")

        factors: list[_Factor] = []
        names: dict[str, int] = {}  # parameter name -> line, across grid and zip
        if "grid" in keys:
            factors.extend(self.grid(keys["grid"][1], names))
        if "zip" in keys:
            factors.extend(self.zip_groups(keys["zip"][1], names))
        total = math.prod(len(factor.rows) for factor in factors)
        if total > MAX_SETS:
            raise self.error(
                key_node,
                f"the parameters expand to {total:,} sets; at most "
                f"{MAX_SETS:,} per experiment: split the sweep",
            )
        id_format = keys.get("id_format")
        return list(self._combine(factors, total, id_format, node))

    def _combine(
        self, factors: list[_Factor], total: int, id_format: tuple[Node, Node] | None, node: Node
    ) -> Iterator[tuple[str, dict[str, str], Node]]:
        template = self.string(id_format[1], "id_format") if id_format else None
        blame = id_format[1] if id_format else node
        width = max(4, len(str(total)))
        seen: dict[str, int] = {}
        rows = itertools.product(*(factor.rows for factor in factors))
        for index, combination in enumerate(rows, start=1):
            values = {
                name: value
                for factor, row in zip(factors, combination, strict=True)
                for name, value in zip(factor.names, row, strict=True)
            }
            set_id = self._format_id(template, values, blame) if template else f"p{index:0{width}d}"
            if set_id in seen:
                raise self.error(
                    blame,
                    f"id_format gives the id {set_id!r} to sets "
                    f"{seen[set_id]} and {index}; include every parameter "
                    "that varies",
                )
            seen[set_id] = index
            yield set_id, values, node

    def _format_id(self, template: str, values: dict[str, str], node: Node) -> str:
        try:
            set_id = template.format_map(values)
        except KeyError as exc:
            raise self.error(
                node,
                f"id_format uses {{{exc.args[0]}}}, which is not a "
                "parameter; known: " + ", ".join(values),
            ) from None
        except (ValueError, IndexError) as exc:
            raise self.error(node, f"id_format is not a valid format: {exc}") from None
        return self._check_id(set_id, node)

    def _check_id(self, set_id: str, node: Node) -> str:
        if not set_id.strip():
            raise self.error(node, "a parameter set id must not be empty")
        if len(set_id) > MAX_ID_LENGTH:
            raise self.error(
                node,
                f"parameter set id {set_id[:20]!r}... is longer than {MAX_ID_LENGTH} characters",
            )
        return set_id

    def _parameter_name(self, key_node: Node, seen: dict[str, int]) -> str:
        name = str(key_node.value)
        if not NAME_RE.match(name) or name in RESERVED_NAMES:
            raise self.error(
                key_node,
                f"{name!r} cannot be a parameter name: use letters, "
                "digits and _, not starting with a digit, and not a "
                "word such as id, if, in, not, true",
            )
        if name in seen:
            raise self.error(
                key_node, f"parameter {name!r} is defined twice (first on line {seen[name]})"
            )
        seen[name] = line_of(key_node)
        return name

    def grid(self, node: Node, seen: dict[str, int]) -> list[_Factor]:
        factors = []
        for key_node, value_node in self.mapping(node, "grid").values():
            name = self._parameter_name(key_node, seen)
            values = self.values(value_node, f"grid.{name}")
            factors.append(_Factor((name,), [(value,) for value in values]))
        if not factors:
            raise self.error(node, "grid is empty; give each parameter a list or a range")
        return factors

    def zip_groups(self, node: Node, seen: dict[str, int]) -> list[_Factor]:
        """``zip:`` as one group (a mapping of lists) or several (a list of such mappings)."""
        groups = [node] if isinstance(node, MappingNode) else self.sequence(node, "zip")
        if not groups:
            raise self.error(node, "zip is empty; give it lists of equal length")
        result = []
        for number, group in enumerate(groups, start=1):
            where = "zip" if group is node else f"zip group {number}"
            columns: list[tuple[str, list[str], Node]] = []
            for key_node, value_node in self.mapping(group, where).values():
                name = self._parameter_name(key_node, seen)
                columns.append((name, self.values(value_node, f"{where}.{name}"), key_node))
            if not columns:
                raise self.error(group, f"{where} is empty")
            lengths = {len(values) for _name, values, _node in columns}
            if len(lengths) > 1:
                detail = ", ".join(
                    f"{name} has {len(values)} (line {line_of(key)})"
                    for name, values, key in columns
                )
                raise self.error(group, f"the lists in {where} must have the same length: {detail}")
            names = tuple(name for name, _values, _node in columns)
            rows = list(zip(*(values for _name, values, _node in columns), strict=True))
            result.append(_Factor(names, rows))
        return result

    def values(self, node: Node, where: str) -> list[str]:
        """A list of values, a range ``{start, stop, step}`` or a single value."""
        if isinstance(node, SequenceNode):
            items = [
                self.value_text(item, f"{where}[{index}]") for index, item in enumerate(node.value)
            ]
            if not items:
                raise self.error(node, f"{where} is an empty list")
            return items
        if isinstance(node, MappingNode):
            return self.range(node, where)
        return [self.value_text(node, where)]

    def range(self, node: Node, where: str) -> list[str]:
        """``{start, stop, step}`` with ``stop`` included when the steps land on it. Decimal
        arithmetic on the numbers as written keeps ``0.1 + 0.2`` at ``0.3``."""
        keys = self.mapping(node, f"the range {where}", RANGE_KEYS)
        for required in RANGE_KEYS:
            if required not in keys:
                raise self.error(
                    node, f"the range {where} needs start, stop and step ({required!r} is missing)"
                )
        numbers = {key: self.number(keys[key][1], f"{where}.{key}") for key in RANGE_KEYS}
        exact = {key: _decimal(keys[key][1].value, numbers[key]) for key in RANGE_KEYS}
        start, stop, step = exact["start"], exact["stop"], exact["step"]
        if step == 0:
            raise self.error(keys["step"][1], f"{where}.step must not be 0")
        span = (stop - start) / step
        if span < Decimal("-1e-9"):
            raise self.error(
                keys["step"][1],
                f"{where}: a step of {keys['step'][1].value} "
                "never reaches stop; use a step of the other sign",
            )
        count = int((span + Decimal("1e-9")).to_integral_value(rounding="ROUND_FLOOR")) + 1
        if count > MAX_SETS:
            raise self.error(node, f"the range {where} has {count:,} values; at most {MAX_SETS:,}")
        integral = all(isinstance(numbers[key], int) for key in RANGE_KEYS)
        return [
            str(int(start + index * step)) if integral else format_number(start + index * step)
            for index in range(count)
        ]

    def explicit_sets(self, entry: tuple[Node, Node]) -> list[tuple[str, dict[str, str], Node]]:
        key_node, node = entry
        items = self.sequence(node, "sets")
        if not items:
            raise self.error(key_node, "sets is an empty list")
        if len(items) > MAX_SETS:
            raise self.error(key_node, f"{len(items):,} sets; at most {MAX_SETS:,} per experiment")
        width = max(4, len(str(len(items))))
        result = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items, start=1):
            where = f"set {index}"
            keys = self.mapping(item, where)
            names: dict[str, int] = {}
            values = {
                self._parameter_name(key, names): self.value_text(value, f"{where}.{name}")
                for name, (key, value) in keys.items()
                if name != "id"
            }
            if "id" in keys:
                set_id = self._check_id(self.value_text(keys["id"][1], f"{where}.id"), item)
            else:
                set_id = f"p{index:0{width}d}"
            if set_id in seen:
                raise self.error(
                    item, f"set id {set_id!r} is used twice (first on line {seen[set_id]})"
                )
            seen[set_id] = line_of(item)
            result.append((set_id, values, item))
        return result

    def _check_placeholders(
        self,
        template: str,
        command_node: Node,
        sets: list[tuple[str, dict[str, str], Node]],
        parameters: tuple[Node, Node] | None,
    ) -> None:
        try:
            placeholders = command_template.template_placeholders(template)
        except command_template.TemplateError as exc:
            raise self.error(command_node, f"command is not a valid template: {exc}") from None
        defined = sorted({name for _id, values, _node in sets for name in values})
        for name in sorted(placeholders):
            if name not in defined:
                known = ", ".join(defined) if defined else "none"
                raise self.error(
                    command_node,
                    f"command uses {{{{ {name} }}}} but no "
                    f"parameter {name!r} is defined (parameters: "
                    f"{known})",
                )
        for set_id, values, node in sets:
            missing = sorted(placeholders - values.keys())
            if missing:
                raise self.error(
                    node,
                    f"set {set_id!r} has no value for "
                    + ", ".join(missing)
                    + f" (used in command on line "
                    f"{line_of(command_node)})",
                )
        first = sets[0][1] if sets else {}
        try:
            command_template.render_command(template, first)
        except command_template.TemplateError as exc:
            raise self.error(command_node, f"command does not render: {exc}") from None
        unused = [name for name in defined if name not in placeholders]
        if unused and parameters is not None:
            self.warnings.append(
                f"line {line_of(parameters[0])}: parameter(s) "
                + ", ".join(unused)
                + " not used in command"
            )

    # -- everything else -----------------------------------------------------------------------

    def compute(self, node: Node) -> dict[str, Any]:
        keys = self.mapping(node, "compute", COMPUTE_KEYS)
        result: dict[str, Any] = {}
        limits = {
            "cores": (1, None),
            "nodes": (1, None),
            "memory_mb": (1, None),
            "gpus": (0, None),
            "max_retries": (0, 10),
        }
        for name, (_key, value) in keys.items():
            if name in limits:
                low, high = limits[name]
                result[name] = self.integer(value, f"compute.{name}", low, high)
            elif name == "walltime":
                result[name] = self.walltime(value)
            else:
                result[name] = self.string(value, f"compute.{name}")
        return result

    def walltime(self, node: Node) -> str:
        """``30m``, ``2h``, ``1h30m``, ``90s``, ``1d``, ``HH:MM:SS`` or ``D-HH:MM:SS``, sent as
        ``HH:MM:SS`` (hours may pass 24)."""
        if not isinstance(node, ScalarNode) or node.tag == NULL:
            raise self.error(
                node, "compute.walltime must be a duration such as 30m, 2h or 01:30:00"
            )
        text = str(node.value).strip().lower()
        seconds = _duration_seconds(text)
        if seconds is None:
            hint = " (a bare number has no unit)" if text.isdigit() else ""
            raise self.error(
                node,
                f"compute.walltime {node.value!r} is not a duration{hint}: "
                "write 30m, 2h, 1h30m, 1d or 01:30:00",
            )
        if seconds <= 0:
            raise self.error(node, "compute.walltime must be longer than 0")
        hours, rest = divmod(seconds, 3600)
        return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"

    def clusters(self, node: Node) -> dict[str, list[str]]:
        keys = self.mapping(node, "clusters", CLUSTER_KEYS)
        allow = self.strings(keys["allow"][1], "clusters.allow") if "allow" in keys else []
        deny = self.strings(keys["deny"][1], "clusters.deny") if "deny" in keys else []
        both = sorted(set(allow) & set(deny))
        if both:
            raise self.error(
                keys["deny"][0], "clusters both allowed and denied: " + ", ".join(both)
            )
        result = {}
        if "allow" in keys:
            result["allowed_compute_resources"] = allow
        if "deny" in keys:
            result["denied_compute_resources"] = deny
        return result

    def cost_weights(self, node: Node) -> dict[str, float | int]:
        result = {}
        for name, (_key, value) in self.mapping(node, "cost_weights").items():
            weight = self.number(value, f"cost_weights.{name}")
            if weight < 0:
                raise self.error(value, f"cost_weights.{name} must not be negative")
            result[name] = weight
        return result

    def deadline(self, node: Node) -> str:
        text = self.string(node, "deadline").strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise self.error(
                node, f"deadline {text!r} is not an ISO 8601 date-time such as 2026-03-01T18:00:00Z"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if moment < datetime.now(UTC):
            self.warnings.append(f"line {line_of(node)}: the deadline is in the past")
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def metadata(
        self, metadata: tuple[Node, Node] | None, tags: tuple[Node, Node] | None
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if metadata is not None:
            self.mapping(metadata[1], "metadata")
            result = self.plain_data(metadata[1])
            if "tags" in result:
                if tags is not None:
                    raise self.error(tags[0], "tags are given twice: here and under metadata")
                inner = self.mapping(metadata[1], "metadata")["tags"][1]
                result["tags"] = self._tags(inner, "metadata.tags")
        if tags is not None:
            result["tags"] = self._tags(tags[1], "tags")
        return result

    def _tags(self, node: Node, where: str) -> list[str]:
        tags = [tag.strip() for tag in self.strings(node, where)]
        return list(dict.fromkeys(tags))


# ---------------------------------------------------------------------------------------------
# Helpers


def _decimal(text: str, number: int | float) -> Decimal:
    """The number exactly as written (``0.1`` stays one tenth); falls back to the float."""
    if isinstance(number, int):
        return Decimal(number)
    try:
        return Decimal(str(text).replace("_", ""))
    except InvalidOperation:
        return Decimal(repr(number))


def _duration_seconds(text: str) -> int | None:
    clock = CLOCK_RE.match(text)
    if clock:
        days, hours, minutes, seconds = (int(part or 0) for part in clock.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    units = DURATION_RE.match(text)
    if text and units and any(units.groups()):
        days, hours, minutes, seconds = (int(part or 0) for part in units.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
