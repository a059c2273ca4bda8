"""The `airavata` command against the live server (SQLite and PostgreSQL): submit, list,
status, watch, cancel, results and config, with the messages of its classic failures."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import airavata_hpc
from airavata_hpc import auth, user_cli
from airavata_hpc.models import Experiment, Task
from airavata_hpc.user_cli import (
    Api,
    CliError,
    Unreachable,
    main,
    progress_line,
    resolve_connection,
)

from support import free_port

EXAMPLES = Path(airavata_hpc.__file__).parent / "examples"
DEMO = EXAMPLES / "integral.yaml"
ENV_NAMES = ("AIRAVATA_SERVER", "AIRAVATA_TOKEN", "AIRAVATA_API_KEY")


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch):
    """No test reads the developer's own config file or AIRAVATA_* variables."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "xdg" / "airavata" / "config.yaml"


@pytest.fixture
def run(server):
    """``run(*args)``: the command as alice, through AIRAVATA_SERVER and AIRAVATA_TOKEN."""
    token = server.token("alice")

    def invoke(*args: str, token: str | None = token, url: str | None = server.url):
        env = {"AIRAVATA_SERVER": url, "AIRAVATA_TOKEN": token}
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def submitted(run) -> str:
    result = run("submit", str(DEMO))
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def one_error_line(result) -> str:
    """The failure is exactly one line on stderr, and the exit code is 2."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


# ---------------------------------------------------------------------------------------------
# submit


def test_submit_creates_and_submits_the_experiment_and_prints_its_id(run, alice):
    result = run("submit", str(DEMO))

    assert result.exit_code == 0, result.output
    experiment_id = result.stdout.strip()
    assert "airavata watch " + experiment_id in result.stderr
    experiment = alice.get(f"/experiments/{experiment_id}").json()
    assert experiment["status"] == "SUBMITTED"
    assert experiment["name"] == "integral-scan"
    assert experiment["compute_requirements"]["max_retries"] == 1
    assert experiment["metadata"]["tags"] == ["demo", "integral"]
    tasks = alice.get(f"/experiments/{experiment_id}/tasks", params={"limit": 100}).json()
    assert tasks["total"] == 10
    assert {task["status"] for task in tasks["tasks"]} == {"PENDING"}
    first = tasks["tasks"][0]
    assert first["metadata"]["parameter_set_id"] == "a1.0-n10"
    assert first["command"].startswith("python3 -c ")
    assert first["command"].endswith(" 1.0 10")


def test_submit_json_prints_the_submitted_experiment(run):
    result = run("submit", str(EXAMPLES / "sqrt-sets.yaml"), "--json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["status"] == "SUBMITTED"
    assert [s["id"] for s in body["parameters"]] == ["two-close", "two-far", "million", "p0004"]


def test_dry_run_shows_the_sets_and_commands_and_sends_nothing(run, alice):
    result = run("submit", str(DEMO), "--dry-run", "--show", "2")

    assert result.exit_code == 0, result.output
    assert "10 parameter set(s)" in result.stdout
    assert "a (5 value(s)), n (2 value(s))" in result.stdout
    assert "a1.0-n10" in result.stdout and "a1.0-n1000" in result.stdout
    assert "a1.5-n10" not in result.stdout
    assert "nothing was sent" in result.stdout
    assert alice.get("/experiments").json()["total"] == 0


def test_dry_run_needs_no_server_and_json_is_the_request_body():
    result = CliRunner().invoke(
        main,
        ["submit", str(DEMO), "--dry-run", "--json"],
        env={"AIRAVATA_SERVER": f"http://127.0.0.1:{free_port()}"},
    )

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["project_id"] == "demo"
    assert len(body["parameters"]) == 10


def test_a_broken_sweep_is_refused_locally_with_its_line(run, alice, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(
        "name: x\nproject: p\ncommand: run {{ alpha }}\nparameters:\n  grid:\n    beta: [1, 2]\n"
    )

    line = one_error_line(run("submit", str(path)))

    assert "broken.yaml, line 3: command uses {{ alpha }}" in line
    assert alice.get("/experiments").json()["total"] == 0


def test_a_400_shows_the_servers_message_and_field(server):
    api = Api(resolve_connection({"server": server.url, "token": server.token("alice")}))

    with pytest.raises(CliError) as caught:
        api.post("/experiments", {"name": "x", "command_template": "echo"})

    assert caught.value.message.startswith("the server rejected the request: ")
    assert "project_id" in caught.value.message


# ---------------------------------------------------------------------------------------------
# list, status, cancel, results


def test_list_shows_a_table_filters_and_prints_json(run, alice):
    first = submitted(run)
    second = submitted(run)
    run("cancel", second)

    table = run("list")
    assert table.exit_code == 0, table.output
    header, *rows = table.stdout.strip().splitlines()
    assert header.split() == ["ID", "NAME", "PROJECT", "STATUS", "TASKS", "CREATED"]
    assert [row.split()[0] for row in rows] == [second, first]
    assert rows[1].split()[1:5] == ["integral-scan", "demo", "SUBMITTED", "10"]

    only = run("list", "--status", "cancelled")
    assert [row.split()[0] for row in only.stdout.strip().splitlines()[1:]] == [second]
    assert "no experiments match" in run("list", "--project", "other").stdout

    page = json.loads(run("list", "--json").stdout)
    assert page["total"] == 2
    assert {e["id"] for e in page["experiments"]} == {first, second}
    summaries = {e["id"]: e["execution_summary"] for e in page["experiments"]}
    assert summaries[second] == {"total_tasks": 10, "by_status": {"CANCELLED": 10}}


def test_list_with_nothing_yet_says_how_to_start(run):
    assert "airavata submit SWEEP.yaml" in run("list").stdout


def test_status_shows_the_experiment_and_a_task_table(run):
    experiment_id = submitted(run)

    result = run("status", experiment_id, "--limit", "3")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"experiment  {experiment_id}  integral-scan" in out
    assert "status      SUBMITTED" in out
    assert "10 task(s): 10 pending" in out
    assert "SET         STATUS   CLUSTER/JOB  EXIT  RETRIES  ERROR" in out
    assert "a1.0-n10    PENDING" in out
    assert "(3 of 10 tasks shown" in out


def test_status_json_and_task_status_filter(run):
    experiment_id = submitted(run)

    body = json.loads(run("status", experiment_id, "--json").stdout)
    assert body["experiment"]["id"] == experiment_id
    assert body["total_tasks"] == 10 and len(body["tasks"]) == 10
    assert body["task_counts"] == {"PENDING": 10}

    assert (
        "no tasks with status FAILED"
        in run("status", experiment_id, "--task-status", "failed").stdout
    )


def test_status_pages_through_more_than_one_page_of_tasks(run, tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text(
        "name: wide\nproject: p\ncommand: echo {{ i }}\nparameters:\n  grid:\n"
        "    i: {start: 1, stop: 150, step: 1}\n"
    )
    experiment_id = run("submit", str(path)).stdout.strip()

    body = json.loads(run("status", experiment_id, "--limit", "1000", "--json").stdout)

    assert len(body["tasks"]) == 150
    assert body["tasks"][-1]["metadata"]["parameter_set_id"] == "p0150"


def test_an_unknown_or_foreign_experiment_reads_as_not_found(run, server):
    line = one_error_line(run("status", "no-such-id"))
    assert "no experiment no-such-id (or it belongs to another user)" in line

    experiment_id = submitted(run)
    for command in ("status", "cancel", "watch", "results"):
        line = one_error_line(run(command, experiment_id, token=server.token("bob")))
        assert f"no experiment {experiment_id} (or it belongs to another user)" in line


def test_cancel_and_cancelling_a_finished_experiment(run, alice):
    experiment_id = submitted(run)

    result = run("cancel", experiment_id)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"experiment {experiment_id} is CANCELLED"
    assert alice.get(f"/experiments/{experiment_id}").json()["status"] == "CANCELLED"
    assert json.loads(run("cancel", experiment_id, "--json").stdout)["status"] == "CANCELLED"

    finished = submitted(run)
    Experiment.update(status="COMPLETED").where(Experiment.id == finished).execute()
    line = one_error_line(run("cancel", finished))
    assert line == (
        "Error: the server rejected the request: experiment is COMPLETED and "
        "cannot become CANCELLED"
    )


def test_results_show_parameters_output_tail_and_errors(run):
    experiment_id = submitted(run)
    tasks = list(Task.select().where(Task.experiment == experiment_id).order_by(Task.set_index))
    Task.update(
        status="COMPLETED",
        exit_code=0,
        result_summary={"stdout_tail": "warming up\na=1 integral=2.008\n", "duration_sec": 0.12},
    ).where(Task.id == tasks[0].id).execute()
    Task.update(
        status="FAILED",
        exit_code=1,
        error_message="Traceback (most recent call last):\nZeroDivisionError",
    ).where(Task.id == tasks[1].id).execute()

    result = run("results", experiment_id, "--limit", "3", "--lines", "1")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "a1.0-n10  COMPLETED  exit 0  a=1.0 n=10"
    assert lines[1:4] == ["    stdout_tail:", "    | a=1 integral=2.008", "    duration_sec: 0.12"]
    assert lines[4] == "a1.0-n1000  FAILED  exit 1  a=1.0 n=1000"
    assert lines[5] == "    error: Traceback (most recent call last):"
    assert lines[6:8] == ["a1.5-n10  PENDING  a=1.5 n=10", "    (no result yet)"]
    assert "(3 of 10 tasks shown" in lines[8]

    body = json.loads(run("results", experiment_id, "--task-status", "COMPLETED", "--json").stdout)
    assert body["total_tasks"] == 1
    assert body["tasks"][0]["result_summary"]["stdout_tail"].endswith("2.008\n")
    assert body["tasks"][0]["parameters"] == {"a": "1.0", "n": "10"}


# ---------------------------------------------------------------------------------------------
# watch


def test_progress_line_rendering():
    line = progress_line(
        {"progress_percentage": 50, "status": "RUNNING"},
        {"PENDING": 3, "COMPLETED": 4, "RUNNING": 2, "FAILED": 1},
        width=10,
    )

    assert line == "[#####.....]  50.0%  RUNNING  completed 4, failed 1, running 2, pending 3"
    assert progress_line({"status": "SUBMITTED"}, {}, width=4) == "[....]   0.0%  SUBMITTED"


def test_watch_returns_1_at_once_on_a_cancelled_experiment(run, alice):
    experiment_id = submitted(run)
    alice.post(f"/experiments/{experiment_id}/cancel")

    result = run("watch", experiment_id, "--interval", "0.1")

    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("[##############################] 100.0%  CANCELLED")
    assert "cancelled 10" in lines[0]
    assert lines[-1] == f"experiment {experiment_id} CANCELLED: 10 task(s): 10 cancelled"


def test_watch_polls_until_the_experiment_ends(run, alice, monkeypatch):
    experiment_id = submitted(run)
    polls = []

    def sleep(seconds):  # the experiment is cancelled from elsewhere during the second wait
        polls.append(seconds)
        if len(polls) == 2:
            alice.post(f"/experiments/{experiment_id}/cancel")

    monkeypatch.setattr(user_cli.time, "sleep", sleep)

    result = run("watch", experiment_id, "--interval", "0.5")

    assert result.exit_code == 1
    assert polls == [0.5, 0.5]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("[..............................]   0.0%  SUBMITTED  pending 10")
    assert "CANCELLED  cancelled 10" in lines[1]
    assert len(lines) == 3  # an unchanged line is not printed again off a terminal


def test_watch_waits_out_a_short_outage_once_the_server_answered(run, alice, monkeypatch):
    experiment_id = submitted(run)
    real_counts = user_cli.task_counts
    calls = []

    def flaky_counts(api, wanted):
        calls.append(wanted)
        if len(calls) in (2, 3):
            raise Unreachable("cannot reach the server at X: Connection refused")
        if len(calls) == 4:
            alice.post(f"/experiments/{experiment_id}/cancel")
        return real_counts(api, wanted)

    monkeypatch.setattr(user_cli, "task_counts", flaky_counts)
    monkeypatch.setattr(user_cli.time, "sleep", lambda seconds: None)

    result = run("watch", experiment_id)

    assert result.exit_code == 1, result.output
    assert result.stderr.count("server unreachable; retrying for up to 60 s") == 1
    assert result.stdout.strip().endswith("CANCELLED: 10 task(s): 10 cancelled")


def test_watch_gives_up_on_a_long_outage_and_at_once_on_a_wrong_server(run, monkeypatch):
    experiment_id = submitted(run)
    real_counts = user_cli.task_counts
    calls = []

    def failing_counts(api, wanted):
        calls.append(wanted)
        if len(calls) > 1:
            raise Unreachable("cannot reach the server at X: Connection refused")
        return real_counts(api, wanted)

    monkeypatch.setattr(user_cli, "task_counts", failing_counts)
    monkeypatch.setattr(user_cli, "WATCH_OUTAGE_SECONDS", 0.0)
    monkeypatch.setattr(user_cli.time, "sleep", lambda seconds: None)
    result = run("watch", experiment_id)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: cannot reach the server")

    closed = f"http://127.0.0.1:{free_port()}"
    assert "cannot reach" in one_error_line(run("watch", experiment_id, url=closed))


def test_ctrl_c_stops_watching_and_leaves_the_experiment_running(run, alice, monkeypatch):
    experiment_id = submitted(run)

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(user_cli.time, "sleep", interrupted)

    result = run("watch", experiment_id)

    assert result.exit_code == 130
    assert f"experiment {experiment_id} keeps running" in result.stderr
    assert f"airavata cancel {experiment_id}" in result.stderr
    assert alice.get(f"/experiments/{experiment_id}").json()["status"] == "SUBMITTED"


# ---------------------------------------------------------------------------------------------
# Credentials, server, config


def test_a_bad_token_says_how_to_get_a_new_one(run):
    line = one_error_line(run("list", token="not-a-token"))

    assert "refused the credentials (invalid token" in line
    assert "airavata-hpc token create --user NAME" in line


def test_no_credentials_at_all_reads_the_same_way(run):
    line = one_error_line(run("list", token=None))

    assert "credentials required" in line
    assert "airavata-hpc token create --user NAME" in line


def test_an_unreachable_server_says_so():
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["list"], env={"AIRAVATA_SERVER": url})

    line = one_error_line(result)
    assert line.startswith(f"Error: cannot reach the server at {url}: ")
    assert "is it running? set AIRAVATA_SERVER or run `airavata config set --server" in line


def test_options_win_over_the_environment_before_or_after_the_command(run, server):
    closed = f"http://127.0.0.1:{free_port()}"
    token = server.token("alice")

    assert run("--server", server.url, "list", url=closed).exit_code == 0
    assert run("list", "--server", server.url, url=closed).exit_code == 0
    assert run("list", "--token", token, token="bad").exit_code == 0
    assert "cannot reach" in one_error_line(run("list", "--server", closed))


def test_an_api_key_from_the_environment_is_sent_as_x_api_key(server):
    key = auth.create_api_key("alice")

    result = CliRunner().invoke(
        main, ["list"], env={"AIRAVATA_SERVER": server.url, "AIRAVATA_API_KEY": key}
    )

    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(
        main, ["list"], env={"AIRAVATA_SERVER": server.url, "AIRAVATA_API_KEY": "ahk_wrong"}
    )
    assert "unknown or revoked API key" in one_error_line(bad)


def test_config_set_writes_a_private_file_that_later_commands_use(server, isolated_config):
    token = server.token("alice")

    result = CliRunner().invoke(
        main, ["config", "set", "--server", server.url + "/api/v1/", "--token", token]
    )

    assert result.exit_code == 0, result.output
    assert str(isolated_config) in result.stdout
    assert stat.S_IMODE(isolated_config.stat().st_mode) == 0o600
    assert stat.S_IMODE(isolated_config.parent.stat().st_mode) == 0o700
    assert "server: " + server.url in isolated_config.read_text()
    assert CliRunner().invoke(main, ["list"]).exit_code == 0

    shown = CliRunner().invoke(main, ["config", "show"])
    assert f"server       {server.url}  (config file)" in shown.stdout
    assert token not in shown.stdout
    assert f"{token[:6]}…{token[-4:]}  (config file)" in shown.stdout

    env = CliRunner().invoke(
        main, ["config", "show", "--json"], env={"AIRAVATA_SERVER": "http://elsewhere:9"}
    )
    body = json.loads(env.stdout)
    assert body["server"] == "http://elsewhere:9"
    assert body["server_source"] == "environment"
    assert body["token_source"] == "config file"

    cleared = CliRunner().invoke(main, ["config", "set", "--token", ""])
    assert cleared.exit_code == 0
    assert "token" not in isolated_config.read_text()
    assert stat.S_IMODE(isolated_config.stat().st_mode) == 0o600


def test_config_set_needs_an_option_and_a_real_url():
    assert CliRunner().invoke(main, ["config", "set"]).exit_code == 2
    line = one_error_line(CliRunner().invoke(main, ["config", "set", "--server", "login1"]))
    assert "must look like http://HOST:PORT" in line


def test_a_broken_config_file_is_reported(isolated_config):
    isolated_config.parent.mkdir(parents=True)
    isolated_config.write_text("server: [unclosed\n")
    isolated_config.chmod(0o600)

    line = one_error_line(CliRunner().invoke(main, ["config", "show"]))
    assert str(isolated_config) in line and "not valid YAML" in line


# ---------------------------------------------------------------------------------------------
# As a real process


def test_the_command_runs_as_a_real_process(server, tmp_path):
    env = {
        **os.environ,
        "AIRAVATA_SERVER": server.url,
        "AIRAVATA_TOKEN": server.token("alice"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }

    def airavata(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "airavata_hpc.user_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    submit = airavata("submit", str(EXAMPLES / "decay-zip.yaml"))
    assert submit.returncode == 0, submit.stderr
    experiment_id = submit.stdout.strip()

    status = airavata("status", experiment_id)
    assert status.returncode == 0, status.stderr
    assert "9 task(s): 9 pending" in status.stdout

    cancel = airavata("cancel", experiment_id)
    assert cancel.stdout.strip() == f"experiment {experiment_id} is CANCELLED"
    watch = airavata("watch", experiment_id, "--interval", "0.1")
    assert watch.returncode == 1
    assert watch.stdout.strip().endswith("CANCELLED: 9 task(s): 9 cancelled")

    missing = airavata("status", "nope")
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.strip() == (
        "Error: no experiment nope (or it belongs to another "
        "user) — list yours with `airavata list`"
    )

    usage = airavata("--help")
    assert usage.returncode == 0
    assert "submit" in usage.stdout and "watch" in usage.stdout
