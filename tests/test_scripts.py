"""Rendering and quoting of commands and batch scripts, and real local runs of the scripts.

The injection attempts are checked by executing what was rendered, with bash, for real: once
through ``bash -c`` and once as a whole local job (local adapter + LocalRunner), which is also
the end-to-end run of a 3-element array: write, submit, poll, read the status files.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from airavata_hpc.adapters import BatchJob, JobElement, get_adapter
from airavata_hpc.command_template import TemplateError, render_command, template_placeholders
from airavata_hpc.remote import LocalRunner
from airavata_hpc.scripts import (
    ScriptTemplateError,
    parse_element_status,
    render_batch_script,
)
from airavata_hpc.states import TaskStatus

PWNED = f"/tmp/ah-pwned-{secrets.token_hex(4)}"
HOSTILE_VALUES = [
    f"$(touch {PWNED}); rm -rf ~",
    f"`touch {PWNED}`",
    f"x; touch {PWNED}",
    f"a && touch {PWNED} #",
    "it's",
    'say "hi"',
    "two  spaces",
    "new\nline",
    "*",
    "~",
    "$HOME",
    "\\",
    "",
    "-rf",
]


def bash(command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=cwd)


# ---------------------------------------------------------------------------- commands


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_each_value_reaches_the_program_as_one_literal_argument(value, tmp_path):
    command = render_command("printf '%s\\0' {{ value }} end", {"value": value})
    result = bash(command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\0")[:-1] == [value, "end"]
    assert not Path(PWNED).exists()
    assert list(tmp_path.iterdir()) == []  # the glob and tilde stayed literal too


def test_several_placeholders_and_numbers():
    command = render_command(
        "python run.py --alpha {{ alpha }} --name {{ name }} -n {{ n }}",
        {"alpha": "0.5", "name": "my run", "n": 3},
    )
    assert command == "python run.py --alpha 0.5 --name 'my run' -n 3"


def test_placeholders_are_listed_and_missing_ones_rejected():
    template = "run {{ a }} {{ b }}{% for x in [1, 2] %} {{ x }}{% endfor %} {{ a }}"
    assert template_placeholders(template) == {"a", "b"}
    with pytest.raises(TemplateError, match="no value for placeholder\\(s\\): b"):
        render_command(template, {"a": "1"})


def test_undefined_attribute_is_an_error_not_an_empty_string():
    with pytest.raises(TemplateError):
        render_command("run {{ a.missing }}", {"a": "1"})


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ a.__init__.__globals__ }}",
        "{{ a.format.__self__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_blocks_attribute_access(template):
    with pytest.raises(TemplateError):
        render_command(template, {"a": "x"})


def test_users_cannot_opt_out_of_quoting():
    with pytest.raises(TemplateError):
        render_command("echo {{ a|raw }}", {"a": "$(id)"})


def test_syntax_errors_and_empty_results_are_reported():
    with pytest.raises(TemplateError, match="line 1"):
        template_placeholders("echo {{ a ")
    with pytest.raises(TemplateError, match="empty"):
        render_command("{% if false %}x{% endif %}", {})
    with pytest.raises(TemplateError, match="limit"):
        template_placeholders("x" * 70_000)


# ---------------------------------------------------------------------------- batch scripts


def test_batch_templates_quote_every_value_unless_raw():
    source = "A={{ a }}\nB={{ a|raw }}\nC={{ n }}\nD={% for x in xs %}{{ x }},{% endfor %}\n"
    out = render_batch_script("override", {"a": "x y", "n": 7, "xs": ["p q", "r"]}, source)
    assert out == "A='x y'\nB=x y\nC=7\nD='p q',r,"  # trim_blocks eats the newline


def test_batch_templates_are_strict():
    with pytest.raises(ScriptTemplateError, match="undefined"):
        render_batch_script("override", {}, "{{ nothing }}")
    with pytest.raises(ScriptTemplateError, match="None"):
        render_batch_script("override", {"v": None}, "{{ v }}")
    with pytest.raises(ScriptTemplateError, match="override of x.sh.j2"):
        render_batch_script("x.sh.j2", {}, "{% if %}")


def test_admin_template_override_can_include_the_element_wrapper():
    local = get_adapter("local")
    job = BatchJob(
        name="ah-override",
        work_dir="/tmp/ah-o",
        walltime_seconds=60,
        elements=(JobElement(0, "/tmp/ah-o/t0", "true"),),
    )
    source = '#!/bin/bash\n# site {{ name }}\n{% include "_element.sh.j2" %}\n__ah_dispatch 0\n'
    script = local.render_script(job, template_source=source)
    assert script.startswith("#!/bin/bash\n# site ah-override\n")
    assert "__ah_run_element 0 /tmp/ah-o/t0 true" in script


def test_element_commands_with_newlines_survive_the_case_statement(tmp_path):
    command = "x=1\nif [ $x = 1 ]; then echo 'multi line ok'; fi"
    job = BatchJob(
        name="ah-ml",
        work_dir=str(tmp_path),
        walltime_seconds=60,
        elements=(JobElement(0, str(tmp_path / "t0"), command),),
    )
    script = get_adapter("slurm").render_script(job)
    (tmp_path / "job.sh").write_text(script)
    result = subprocess.run(["bash", str(tmp_path / "job.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t0" / "stdout").read_text() == "multi line ok\n"
    status = parse_element_status((tmp_path / "t0" / "status").read_text())
    assert status.exit_code == 0 and status.finished and status.host


def test_sge_script_maps_the_one_based_task_id(tmp_path):
    elements = tuple(JobElement(i, str(tmp_path / f"t{i}"), f"echo {i}") for i in range(3))
    job = BatchJob(name="ah-sge", work_dir=str(tmp_path), walltime_seconds=60, elements=elements)
    path = tmp_path / "job.sh"
    path.write_text(get_adapter("sge").render_script(job))
    for task_id, index in (("1", 0), ("3", 2)):
        env = {"PATH": "/usr/bin:/bin", "SGE_TASK_ID": task_id}
        subprocess.run(["bash", str(path)], env=env, check=True)
        assert (tmp_path / f"t{index}" / "stdout").read_text() == f"{index}\n"
    assert not (tmp_path / "t1").exists()
    bad = subprocess.run(
        ["bash", str(path)],
        env={"PATH": "/usr/bin:/bin", "SGE_TASK_ID": "9"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 3 and "no element with index 8" in bad.stderr


def test_parse_element_status():
    assert parse_element_status(None) is None
    running = parse_element_status("start=100\nhost=n1\nindex=0\n")
    assert (running.start, running.host, running.end, running.finished) == (100, "n1", None, False)
    done = parse_element_status("start=100\nhost=n1\nend=160\nexit_code=3\nfuture=x\n")
    assert (done.end, done.exit_code, done.finished) == (160, 3, True)
    assert parse_element_status("start=abc\n").start is None


# ---------------------------------------------------------------------------- real local runs


async def poll(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def submit_local(runner, adapter, job: BatchJob) -> str:
    await runner.write_files({job.script_path: adapter.render_script(job)})
    result = await runner.run(adapter.submit_command(job.script_path))
    return adapter.parse_submit_output(result.stdout)


async def statuses(runner, job: BatchJob) -> list:
    paths = [f"{e.task_dir}/status" for e in job.elements]
    files = await runner.read_files(paths)
    return [parse_element_status(files[p]) for p in paths]


async def test_local_array_end_to_end_with_hostile_values(tmp_path):
    """Write the script, submit, poll status, read status files: 3 elements, for real."""
    runner = LocalRunner()
    adapter = get_adapter("local", cores=2)
    template = "printf '%s\\n' {{ value }} > out.txt; sleep 0.3; exit {{ code }}"
    values = [(HOSTILE_VALUES[0], "0"), ("it's", "5"), ("new\nline", "0")]
    elements = tuple(
        JobElement(i, str(tmp_path / f"t{i}"), render_command(template, {"value": v, "code": c}))
        for i, (v, c) in enumerate(values)
    )
    job = BatchJob(name="ah-e2e", work_dir=str(tmp_path), elements=elements, walltime_seconds=60)
    pid = await submit_local(runner, adapter, job)
    ids = adapter.element_job_ids(pid, job)
    assert set(ids.values()) == {pid}

    seen: set[TaskStatus] = set()

    async def ended():
        out = await runner.run(adapter.status_command([pid]))
        found = adapter.parse_status_output(out.stdout)
        if pid in found:
            seen.add(found[pid].status)
            return False
        current = await statuses(runner, job)
        return current if all(s is not None and s.finished for s in current) else False

    final = await poll(ended, 20, "the local job to end")
    assert seen == {TaskStatus.RUNNING}
    assert [s.exit_code for s in final] == [0, 5, 0]
    outputs = await runner.read_files([f"{e.task_dir}/out.txt" for e in elements])
    assert [outputs[f"{e.task_dir}/out.txt"] for e in elements] == [f"{v}\n" for v, _ in values]
    assert (await runner.read_files([f"{e.task_dir}/stderr" for e in elements])) == {
        f"{e.task_dir}/stderr": "" for e in elements
    }
    assert not Path(PWNED).exists()
    # Two at a time on two cores: the third element starts after one of the first two ended.
    first_end = min(final[0].end, final[1].end)
    assert final[2].start >= first_end


async def test_local_cancel_kills_the_group_and_records_it(tmp_path):
    runner = LocalRunner()
    adapter = get_adapter("local", cores=1)
    elements = tuple(JobElement(i, str(tmp_path / f"t{i}"), "sleep 60") for i in range(2))
    job = BatchJob(
        name="ah-cancel", work_dir=str(tmp_path), elements=elements, walltime_seconds=120
    )
    pid = await submit_local(runner, adapter, job)

    async def first_started():
        return (await statuses(runner, job))[0]

    await poll(first_started, 10, "element 0 to start")
    await runner.run(adapter.cancel_command([pid]))

    async def gone():
        out = await runner.run(adapter.status_command([pid]))
        if pid in adapter.parse_status_output(out.stdout):
            return False
        current = await statuses(runner, job)
        return current if current[0] and current[0].finished else False

    final = await poll(gone, 10, "the cancelled job to go")
    assert final[0].exit_code == 143  # TERM reached the command and was recorded
    assert final[1] is None  # never started: one core, and the job was cancelled
    leftover = await runner.run(["pgrep", "-f", "sleep 60"], check=False)
    assert leftover.stdout.strip() == "" or not await _in_group(leftover.stdout, pid)


async def _in_group(pids: str, pgid: str) -> bool:
    for pid in pids.split():
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[4] == pgid:
                return True
        except (FileNotFoundError, IndexError):
            continue
    return False


async def test_local_walltime_is_enforced(tmp_path):
    runner = LocalRunner()
    adapter = get_adapter("local")
    job = BatchJob(
        name="ah-walltime",
        work_dir=str(tmp_path),
        walltime_seconds=1,
        elements=(JobElement(0, str(tmp_path / "t0"), "sleep 30"),),
    )
    started = time.monotonic()
    await submit_local(runner, adapter, job)

    async def ended():
        status = (await statuses(runner, job))[0]
        return status if status and status.finished else False

    status = await poll(ended, 15, "the time limit to stop the element")
    assert status.exit_code == 124  # timeout(1)'s code for "time limit reached"
    assert time.monotonic() - started < 10
