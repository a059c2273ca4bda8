"""Sweep files: expansion of grids, ranges, zip groups and explicit sets, number formatting,
errors that name the line, and the example sweeps shipped with the package."""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

import pytest

import airavata_hpc
import airavata_hpc.sweep
from airavata_hpc import command_template
from airavata_hpc.spec import validate
from airavata_hpc.sweep import MAX_SETS, SweepError, format_number, load_sweep, parse_sweep

EXAMPLES = sorted((Path(airavata_hpc.__file__).parent / "examples").glob("*.yaml"))

HEAD = "name: s\nproject: p\n"


def sweep(text: str, head: str = HEAD):
    """Parse ``head`` (name and project) followed by the dedented ``text``."""
    return parse_sweep(head + textwrap.dedent(text), source="s.yaml")


def error_of(text: str, head: str = HEAD) -> SweepError:
    with pytest.raises(SweepError) as caught:
        sweep(text, head)
    return caught.value


def values(result, name: str) -> list[str]:
    return [s["values"][name] for s in result.body["parameters"]]


# ---------------------------------------------------------------------------------------------
# Expansion


def test_grid_is_the_cartesian_product_in_file_order_with_numbered_ids():
    result = sweep("""\
        command: run {{ a }} {{ b }}
        parameters:
          grid:
            a: [1, 2]
            b: [x, y, z]
        """)

    sets = result.body["parameters"]
    assert [s["id"] for s in sets] == [f"p000{i}" for i in range(1, 7)]
    assert [tuple(s["values"].values()) for s in sets] == [
        ("1", "x"),
        ("1", "y"),
        ("1", "z"),
        ("2", "x"),
        ("2", "y"),
        ("2", "z"),
    ]
    assert result.count == 6
    assert result.commands(2) == [("p0001", "run 1 x"), ("p0002", "run 1 y")]


def test_a_float_range_includes_stop_and_has_no_float_noise():
    result = sweep("""\
        command: run {{ a }}
        parameters:
          grid:
            a: {start: 0.1, stop: 1.0, step: 0.1}
        """)

    assert values(result, "a") == [
        "0.1",
        "0.2",
        "0.3",
        "0.4",
        "0.5",
        "0.6",
        "0.7",
        "0.8",
        "0.9",
        "1.0",
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{start: 0, stop: 10, step: 5}", ["0", "5", "10"]),
        ("{start: 0, stop: 9, step: 5}", ["0", "5"]),
        ("{start: 1, stop: 0, step: -0.25}", ["1.0", "0.75", "0.5", "0.25", "0.0"]),
        ("{start: 0, stop: 0.3, step: 0.1}", ["0.0", "0.1", "0.2", "0.3"]),
        ("{start: 1.5, stop: 1.5, step: 1}", ["1.5"]),
        ("{start: 0.000001, stop: 0.000003, step: 0.000001}", ["1e-06", "2e-06", "3e-06"]),
    ],
)
def test_ranges(spec, expected):
    result = sweep(f"command: run {{{{ a }}}}\nparameters:\n  grid:\n    a: {spec}\n")

    assert values(result, "a") == expected


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0.1 + 0.2, "0.3"),
        (1.0, "1.0"),
        (3, "3"),
        (-0.0, "0.0"),
        (2.5e-7, "2.5e-07"),
        (1 / 3, "0.333333333333333"),
        (123456.789, "123456.789"),
    ],
)
def test_format_number(number, text):
    assert format_number(number) == text


def test_values_are_strings_exactly_as_written():
    result = sweep("""\
        command: run {{ a }}
        parameters:
          grid:
            a: [yes, NO, 010, 1e-3, 0.50, "quoted text", '', 2024-01-31]
        """)

    assert values(result, "a") == [
        "yes",
        "NO",
        "010",
        "1e-3",
        "0.50",
        "quoted text",
        "",
        "2024-01-31",
    ]


def test_a_single_value_in_a_grid_is_a_constant():
    result = sweep("""\
        command: run {{ a }} {{ n }}
        parameters:
          grid:
            a: [1, 2]
            n: 1000
        """)

    assert values(result, "n") == ["1000", "1000"]


def test_zip_advances_lists_together_and_crosses_with_the_grid():
    result = sweep("""\
        command: run {{ t }} {{ name }} {{ size }}
        parameters:
          grid:
            t: [1, 2]
          zip:
            name: [small, large]
            size: [10, 1000]
        """)

    assert [tuple(s["values"].values()) for s in result.body["parameters"]] == [
        ("1", "small", "10"),
        ("1", "large", "1000"),
        ("2", "small", "10"),
        ("2", "large", "1000"),
    ]


def test_several_zip_groups_are_crossed_with_each_other():
    result = sweep("""\
        command: run {{ a }} {{ b }} {{ c }} {{ d }}
        parameters:
          zip:
            - {a: [1, 2], b: [x, y]}
            - {c: [u, v, w], d: {start: 1, stop: 3, step: 1}}
        """)

    assert result.count == 6
    assert result.body["parameters"][5]["values"] == {"a": "2", "b": "y", "c": "w", "d": "3"}


def test_explicit_sets_keep_their_ids_and_number_the_others_by_position():
    result = sweep("""\
        command: run {{ x }}
        parameters:
          sets:
            - {id: first, x: 1}
            - {x: 2}
            - id: 3
              x: three
        """)

    assert result.body["parameters"] == [
        {"id": "first", "values": {"x": "1"}},
        {"id": "p0002", "values": {"x": "2"}},
        {"id": "3", "values": {"x": "three"}},
    ]


def test_id_format_builds_readable_ids_from_values():
    result = sweep("""\
        command: run {{ a }} {{ n }}
        parameters:
          grid:
            a: [0.5, 1.0]
            n: [10, 100]
          id_format: "a{a}-n{n}"
        """)

    assert [s["id"] for s in result.body["parameters"]] == [
        "a0.5-n10",
        "a0.5-n100",
        "a1.0-n10",
        "a1.0-n100",
    ]


def test_a_sweep_without_parameters_is_one_task():
    result = sweep("command: hostname\n")

    assert "parameters" not in result.body
    assert result.count == 1
    assert result.commands() == [("default", "hostname")]


def test_the_body_is_a_valid_create_request_with_every_field():
    result = sweep(
        head="",
        text="""\
        name: full
        project: proj
        description: all the fields
        command: run --x {{ x }}
        output_pattern: "*.out"
        parameters:
          grid:
            x: [1, 2]
        compute:
          cores: 4
          nodes: 1
          memory_mb: 2048
          gpus: 0
          walltime: 1h30m
          max_retries: 2
          partition: short
          account: proj-123
        clusters:
          allow: [local, lab-slurm]
          deny: [big-pbs]
        compute_types: [slurm, local]
        cost_weights: {time: 1, cost: 0.5}
        deadline: 2099-03-01T18:00:00+01:00
        metadata:
          owner_group: physics
          when: 2026-01-31
        tags: [scan, demo, scan]
        """,
    )

    body = result.body
    validate(body, "CreateExperimentRequest")
    assert body["project_id"] == "proj"
    assert body["command_template"] == "run --x {{ x }}"
    assert body["output_pattern"] == "*.out"
    assert body["compute_requirements"] == {
        "cores": 4,
        "nodes": 1,
        "memory_mb": 2048,
        "gpus": 0,
        "walltime": "01:30:00",
        "max_retries": 2,
        "partition": "short",
        "account": "proj-123",
    }
    assert body["allowed_compute_resources"] == ["local", "lab-slurm"]
    assert body["denied_compute_resources"] == ["big-pbs"]
    assert body["allowed_compute_types"] == ["slurm", "local"]
    assert body["cost_weights"] == {"time": 1, "cost": 0.5}
    assert body["deadline"] == "2099-03-01T17:00:00Z"
    assert body["metadata"] == {
        "owner_group": "physics",
        "when": "2026-01-31",
        "tags": ["scan", "demo"],
    }
    assert all(isinstance(v, str) for s in body["parameters"] for v in s["values"].values())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", "00:30:00"),
        ("2h", "02:00:00"),
        ("90s", "00:01:30"),
        ("1d", "24:00:00"),
        ("01:30:00", "01:30:00"),
        ("1-02:00:00", "26:00:00"),
        ("1h30m", "01:30:00"),
    ],
)
def test_walltime_forms(text, seconds):
    result = sweep(f"command: x\ncompute:\n  walltime: {text!r}\n")

    assert result.body["compute_requirements"]["walltime"] == seconds


def test_unused_parameters_and_a_past_deadline_are_warnings():
    result = sweep("""\
        command: run {{ a }}
        parameters:
          grid:
            a: [1]
            b: [2]
        deadline: 2000-01-01T00:00:00Z
        """)

    assert any("b not used in command" in w for w in result.warnings)
    assert any("deadline is in the past" in w for w in result.warnings)


def test_a_large_product_is_refused_before_it_is_built():
    started = time.monotonic()
    error = error_of("""\
        command: run {{ a }} {{ b }}
        parameters:
          grid:
            a: {start: 1, stop: 1000, step: 1}
            b: {start: 1, stop: 1000, step: 1}
        """)

    assert error.line == 4
    assert "1,000,000 sets" in str(error) and f"{MAX_SETS:,}" in str(error)
    assert time.monotonic() - started < 1


# ---------------------------------------------------------------------------------------------
# Errors name the line


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            HEAD + "command: run\nparamters:\n  grid: {a: [1]}\n",
            4,
            ["unknown key 'paramters'", "did you mean 'parameters'", "known keys: name, project"],
        ),
        (
            HEAD + "command: run\ncompute_requirements: {cores: 1}\n",
            4,
            ["'compute_requirements'", "writes it as compute"],
        ),
        (
            HEAD + "command: run\ncompute:\n  cores: 1\n  memroy_mb: 10\n",
            6,
            ["unknown key 'memroy_mb' in compute", "memory_mb", "walltime"],
        ),
        (
            HEAD + "\n\ncommand: run {{ a }} {{ b }}\nparameters:\n  grid:\n    a: [1]\n",
            5,
            ["command uses {{ b }}", "parameters: a"],
        ),
        (HEAD + "command: run {{ a }\n", 3, ["command is not a valid template"]),
        (
            HEAD + "command: run {{ a.__class__ }}\nparameters:\n  grid: {a: [1]}\n",
            3,
            ["command does not render", "not allowed"],
        ),
        (
            "name: s\nproject: p\nproject: q\ncommand: x\n",
            3,
            ["'project' appears twice", "first on line 2"],
        ),
        (
            HEAD + "command: run {{ a }}\nparameters:\n  grid:\n    a: [1, 2\n",
            7,
            ["not valid YAML"],
        ),
        (
            HEAD + "command: run {{ a }}\nparameters:\n  grid:\n    a: [1, ~]\n",
            6,
            ["grid.a[1] is empty", "''"],
        ),
        (
            HEAD + "command: run {{ a }}\nparameters:\n  grid:\n    a: [1, [2]]\n",
            6,
            ["grid.a[1] must be a single value"],
        ),
        (
            HEAD + "command: run {{ a }}\nparameters:\n  grid:\n    a: {start: 0, stop: 1}\n",
            6,
            ["needs start, stop and step", "'step' is missing"],
        ),
        (
            HEAD
            + "command: run {{ a }}\nparameters:\n  grid:\n    a: {start: 0, stop: 1, step: 0}\n",
            6,
            ["step must not be 0"],
        ),
        (
            HEAD
            + "command: run {{ a }}\nparameters:\n  grid:\n    a:\n      start: 5\n      stop: 1\n"
            "      step: 1\n",
            9,
            ["never reaches stop"],
        ),
        (
            HEAD + "command: run {{ a }}\nparameters:\n  zip:\n    a: [1, 2]\n    b: [1, 2, 3]\n",
            6,
            ["same length", "a has 2 (line 6)", "b has 3 (line 7)"],
        ),
        (
            HEAD + "command: run {{ a }}\nparameters:\n  grid:\n    a: [1]\n  zip:\n    a: [2]\n",
            8,
            ["'a' is defined twice", "first on line 6"],
        ),
        (
            HEAD + "command: run {{ x }}\nparameters:\n  sets:\n    - {x: 1}\n    - {y: 2}\n",
            7,
            ["set 'p0002' has no value for x", "command on line 3"],
        ),
        (
            HEAD + "command: run {{ x }}\nparameters:\n  sets:\n    - {id: a, x: 1}\n"
            "    - {id: a, x: 2}\n",
            7,
            ["set id 'a' is used twice", "first on line 6"],
        ),
        (
            HEAD + "command: run {{ x }}\nparameters:\n  grid: {x: [1]}\n  sets:\n    - {x: 1}\n",
            5,
            ["'grid' cannot be combined with 'sets'"],
        ),
        (
            HEAD + "command: run {{ x }}\nparameters:\n  grid: {x: [1, 2]}\n  id_format: same\n",
            6,
            ["id_format gives the id 'same' to sets 1 and 2"],
        ),
        (
            HEAD + "command: run {{ x }}\nparameters:\n  grid: {x: [1]}\n  id_format: '{y}'\n",
            6,
            ["id_format uses {y}"],
        ),
        (
            HEAD + "command: run\nparameters:\n  grid:\n    2x: [1]\n",
            6,
            ["'2x' cannot be a parameter name"],
        ),
        (
            HEAD + "command: run\ncompute:\n  walltime: 30\n",
            5,
            ["not a duration", "bare number has no unit", "30m"],
        ),
        (HEAD + "command: run\ncompute:\n  max_retries: 11\n", 5, ["from 0 to 10"]),
        (HEAD + "command: run\ncompute:\n  cores: two\n", 5, ["whole number"]),
        (HEAD + "command: run\nclusters:\n  allow: [a]\n  deny: [a]\n", 6, ["allowed and denied"]),
        (HEAD + "command: run\ndeadline: next friday\n", 4, ["ISO 8601"]),
        (HEAD + "command: run\ntags: [a, [b]]\n", 4, ["tags[1] must be text"]),
        ("name: s\ncommand: run\n", 1, ["'project' is missing"]),
    ],
)
def test_errors_name_the_line(text, line, words):
    error = error_of(text, head="")

    assert error.line == line, str(error)
    message = str(error)
    assert message.startswith(f"s.yaml, line {line}: ")
    assert "\n" not in message
    for word in words:
        assert word in message


def test_an_empty_file_and_a_missing_file(tmp_path):
    with pytest.raises(SweepError, match="the file is empty"):
        parse_sweep("# nothing\n")
    with pytest.raises(SweepError, match="cannot read the sweep file"):
        load_sweep(tmp_path / "absent.yaml")


def test_too_many_explicit_sets_is_an_error(monkeypatch):
    monkeypatch.setattr(airavata_hpc.sweep, "MAX_SETS", 3)  # composing 100,001 sets is slow
    text = HEAD + "command: run {{ x }}\nparameters:\n  sets:\n" + "    - {x: 1}\n" * 4

    with pytest.raises(SweepError, match="4 sets; at most 3 per experiment") as caught:
        parse_sweep(text)
    assert caught.value.line == 5


# ---------------------------------------------------------------------------------------------
# The shipped examples


def test_the_examples_folder_holds_the_demo_and_others():
    names = {path.name for path in EXAMPLES}
    assert "integral.yaml" in names
    assert len(names) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_parses_and_covers_its_placeholders(path):
    result = load_sweep(path)

    body = result.body
    validate(body, "CreateExperimentRequest")
    assert result.warnings == []
    placeholders = command_template.template_placeholders(body["command_template"])
    assert placeholders
    for parameter_set in body["parameters"]:
        assert placeholders <= parameter_set["values"].keys()
    assert len({s["id"] for s in body["parameters"]}) == len(body["parameters"])
    assert all(command for _id, command in result.commands(1000))


def test_the_demo_runs_with_the_system_python_and_each_set_gives_its_own_answer():
    result = load_sweep(next(path for path in EXAMPLES if path.name == "integral.yaml"))

    assert 8 <= result.count <= 12
    outputs = set()
    for _set_id, command in result.commands(result.count):
        started = time.monotonic()
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 5
        assert "integral=" in done.stdout
        outputs.add(done.stdout)
    assert len(outputs) == result.count
