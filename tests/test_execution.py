"""One behaviour suite over every adapter: the same experiments run on the local runner, on
the lab's real Slurm and Son of Grid Engine over real SSH, and through Slurm's PBS (Torque)
wrappers over a second sshd. Only the cluster fixture differs.

Each test drives the real server (API + engine) over HTTP and waits, with a deadline, for
what a gateway would see.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from airavata_hpc.clusters import parse_cluster
from airavata_hpc.engine import Engine
from airavata_hpc.settings import Settings

from support import LiveServer

KINDS = ["local", "slurm", "sge", "pbs"]
# Slurm takes --time in whole minutes and enforces it about every 30 s (slurm.conf
# OverTimeLimit/inactive limit checks); SGE and the local runner take seconds.
TIME_LIMIT = {"local": 2, "sge": 3, "slurm": 60, "pbs": 60}
DEADLINE = {"local": 30, "sge": 90, "slurm": 90, "pbs": 90}


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def cluster_config(kind, request, tmp_path):
    run_id = uuid.uuid4().hex[:8]
    if kind == "local":
        data = {
            "name": "local",
            "type": "local",
            "work_dir": str(tmp_path / "work"),
            "poll_interval": 0.3,
        }
        return parse_cluster(data, "test")
    if kind == "pbs":
        sshd = request.getfixturevalue("torque_sshd")
        extra = {"type": "pbs", "flavor": "torque"}
    else:
        sshd = request.getfixturevalue("sshd")
        lab = request.getfixturevalue("slurm" if kind == "slurm" else "gridengine")
        extra = {"type": kind, "queue": lab.partition if kind == "slurm" else lab.queue}
    data = {
        "name": kind,
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "key_file": str(sshd.key_file),
        "known_hosts": str(sshd.known_hosts),
        "work_dir": f"/home/hpcuser/airavata-tests/{run_id}",
        "poll_interval": 1.0,
        **extra,
    }
    return parse_cluster(data, "test")


def start_server(database_url, cluster_config, grace=5.0):
    def factory(settings, metrics):
        return Engine([cluster_config], metrics, grace_seconds=grace)

    return LiveServer(Settings(port=0, database_url=database_url), engine_factory=factory).start()


@pytest.fixture
def live(sqlite_url, cluster_config):
    server = start_server(sqlite_url, cluster_config)
    yield server
    server.stop()


def run_experiment(client, command, sets, **extra):
    body = {
        "name": "t",
        "project_id": "p",
        "command_template": command,
        "parameters": [{"id": f"s{i}", "values": v} for i, v in enumerate(sets)],
        **extra,
    }
    created = client.post("/experiments", json=body)
    assert created.status_code == 201, created.text
    experiment_id = created.json()["id"]
    assert client.post(f"/experiments/{experiment_id}/submit").status_code == 200
    return experiment_id


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def experiment_status(client, experiment_id):
    return client.get(f"/experiments/{experiment_id}").json()["status"]


def wait_final(client, experiment_id, timeout):
    return wait_for(
        lambda: (
            experiment_status(client, experiment_id) in ("COMPLETED", "FAILED", "CANCELLED")
            and experiment_status(client, experiment_id)
        ),
        timeout,
        "a final status",
    )


def all_tasks(client, experiment_id):
    tasks, offset = [], 0
    while True:
        page = client.get(
            f"/experiments/{experiment_id}/tasks", params={"limit": 100, "offset": offset}
        ).json()
        tasks += page["tasks"]
        offset += 100
        if offset >= page["total"]:
            return tasks


def test_success_records_what_happened(live, kind):
    client = live.client("alice")
    experiment_id = run_experiment(client, "echo value={{ x }}", [{"x": "1"}, {"x": "two"}])

    assert wait_final(client, experiment_id, DEADLINE[kind]) == "COMPLETED"
    tasks = all_tasks(client, experiment_id)
    assert [t["status"] for t in tasks] == ["COMPLETED", "COMPLETED"]
    assert [t["result_summary"]["stdout_tail"] for t in tasks] == ["value=1\n", "value=two\n"]
    for task in tasks:
        assert task["exit_code"] == 0
        assert task["started_at"] <= task["completed_at"]
        [attempt] = task["worker_assignment_history"]
        assert attempt["cluster"] == kind and attempt["native_job_id"]
        assert task["assigned_worker_id"] == f"{kind}/{attempt['native_job_id']}"
        assert task["execution_metrics"]["host"]
    events = [
        e["event_type"]
        for e in client.get(f"/experiments/{experiment_id}/timeline").json()["events"]
    ]
    assert events[0] == "EXPERIMENT_CREATED" and events[-1] == "EXPERIMENT_COMPLETED"
    assert events.count("TASK_COMPLETED") == 2


def test_non_zero_exit_fails_with_the_exit_code_and_stderr(live, kind):
    client = live.client("alice")
    experiment_id = run_experiment(client, "echo broken {{ x }} >&2; exit 7", [{"x": "a"}])

    assert wait_final(client, experiment_id, DEADLINE[kind]) == "FAILED"
    [task] = all_tasks(client, experiment_id)
    assert task["status"] == "FAILED" and task["exit_code"] == 7
    assert "exit code 7" in task["error_message"] and "broken a" in task["error_message"]
    [failed] = client.get(f"/experiments/{experiment_id}/failed-tasks").json()
    assert failed["error"] == task["error_message"] and failed["suggested_fix"]


def test_a_failed_task_is_retried_within_max_retries(live, kind):
    client = live.client("alice")
    experiment_id = run_experiment(
        client, "exit {{ code }}", [{"code": "3"}], compute_requirements={"max_retries": 1}
    )

    assert wait_final(client, experiment_id, 2 * DEADLINE[kind]) == "FAILED"
    [task] = all_tasks(client, experiment_id)
    assert task["retry_count"] == 1
    assert [a["attempt"] for a in task["worker_assignment_history"]] == [1, 2]
    assert {a["state"] for a in task["worker_assignment_history"]} == {"FAILED"}


def test_an_array_of_100_runs_as_one_submission(live, kind):
    client = live.client("alice")
    experiment_id = run_experiment(client, "echo {{ i }}", [{"i": str(i)} for i in range(100)])

    assert wait_final(client, experiment_id, 4 * DEADLINE[kind]) == "COMPLETED"
    tasks = all_tasks(client, experiment_id)
    assert [t["result_summary"]["stdout_tail"] for t in tasks] == [f"{i}\n" for i in range(100)]
    assert len({t["worker_assignment_history"][0]["job_name"] for t in tasks}) == 1


def test_parameters_that_try_shell_injection_stay_literal(live, kind):
    client = live.client("alice")
    marker = f"/tmp/pwned-{uuid.uuid4().hex}"
    hostile = f"$(touch {marker}); rm -rf ~; `touch {marker}` ' \" \\"
    experiment_id = run_experiment(client, "printf '%s\\n' {{ x }}", [{"x": hostile}])

    assert wait_final(client, experiment_id, DEADLINE[kind]) == "COMPLETED"
    [task] = all_tasks(client, experiment_id)
    assert task["result_summary"]["stdout_tail"] == hostile + "\n"
    assert not Path(marker).exists()


def test_cancel_stops_running_jobs(live, kind):
    client = live.client("alice")
    experiment_id = run_experiment(client, "sleep {{ t }}", [{"t": "300"}, {"t": "301"}])
    wait_for(
        lambda: {t["status"] for t in all_tasks(client, experiment_id)} == {"RUNNING"},
        DEADLINE[kind],
        "both tasks running",
    )
    job_ids = [
        t["worker_assignment_history"][0]["native_job_id"] for t in all_tasks(client, experiment_id)
    ]

    cancelled = client.post(f"/experiments/{experiment_id}/cancel")

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert {t["status"] for t in all_tasks(client, experiment_id)} == {"CANCELLED"}
    engine = live.context.engine
    wait_for(
        lambda: not still_queued(engine, kind, job_ids),
        DEADLINE[kind],
        "the jobs to leave the cluster",
    )


def still_queued(engine, kind, job_ids):
    """Ask the cluster itself, through the engine's own runner and adapter."""
    import asyncio

    cluster = engine.by_name[kind]
    future = asyncio.run_coroutine_threadsafe(
        cluster.runner.run(cluster.adapter.status_command(job_ids), check=False),
        engine_loop(engine),
    )
    result = future.result(30)
    states = cluster.adapter.parse_status_output(result.stdout)
    return [job for job in job_ids if job in states and not states[job].status.is_final]


def engine_loop(engine):
    return engine._task.get_loop()


def test_time_limit_fails_the_task_with_the_reason(live, kind):
    client = live.client("alice")
    limit = TIME_LIMIT[kind]
    experiment_id = run_experiment(
        client, "sleep {{ t }}", [{"t": "600"}], compute_requirements={"walltime_seconds": limit}
    )

    assert wait_final(client, experiment_id, limit + 2 * DEADLINE[kind]) == "FAILED"
    [task] = all_tasks(client, experiment_id)
    assert task["error_message"]
    [failed] = client.get(f"/experiments/{experiment_id}/failed-tasks").json()
    assert "time" in failed["suggested_fix"].lower(), failed


def test_a_restart_in_the_middle_of_a_run_neither_loses_nor_duplicates(
    sqlite_url, cluster_config, kind
):
    first = start_server(sqlite_url, cluster_config)
    client = first.client("alice")
    experiment_id = run_experiment(
        client, "sleep 2; echo {{ i }}", [{"i": str(i)} for i in range(4)]
    )
    wait_for(
        lambda: any(t["status"] in ("QUEUED", "RUNNING") for t in all_tasks(client, experiment_id)),
        DEADLINE[kind],
        "jobs on the cluster",
    )
    first.stop()

    second = start_server(sqlite_url, cluster_config)
    try:
        client = second.client("alice")
        assert wait_final(client, experiment_id, 2 * DEADLINE[kind]) == "COMPLETED"
        tasks = all_tasks(client, experiment_id)
        assert [len(t["worker_assignment_history"]) for t in tasks] == [1, 1, 1, 1]
        assert [t["result_summary"]["stdout_tail"] for t in tasks] == ["0\n", "1\n", "2\n", "3\n"]
    finally:
        second.stop()


def test_a_job_submitted_just_before_a_crash_is_adopted_not_resubmitted(
    sqlite_url, cluster_config, kind
):
    """The attempt row is written before the batch command; if the server dies after the
    command but before recording the job id, the restarted server finds the job by name."""
    import asyncio

    from airavata_hpc.db import open_database
    from airavata_hpc.migrations import migrate

    first = start_server(sqlite_url, cluster_config)
    client = first.client("alice")
    first.stop()
    created = client.post  # the server is down: write through the database instead
    del created
    open_database(sqlite_url)
    migrate()
    engine = Engine([cluster_config])

    from airavata_hpc import experiments
    from airavata_hpc.auth import Principal

    alice = Principal("alice")
    experiment = experiments.create(
        alice,
        {
            "name": "crash",
            "project_id": "p",
            "command_template": "echo {{ i }}",
            "parameters": [{"id": "a", "values": {"i": "1"}}, {"id": "b", "values": {"i": "2"}}],
        },
    )
    experiments.submit(alice, experiment.id)
    engine._place_pending()  # attempts recorded, nothing submitted yet

    async def submit_behind_the_engines_back():
        from airavata_hpc.models import Task, TaskAttempt

        cluster = engine.clusters[0]
        attempts = list(
            TaskAttempt.select(TaskAttempt, Task).join(Task).order_by(TaskAttempt.array_index)
        )
        job = engine._batch_job(cluster, attempts, experiment)
        await cluster.runner.write_files({job.script_path: cluster.adapter.render_script(job)})
        await cluster.runner.run(cluster.adapter.submit_command(job.script_path))
        await cluster.runner.close()

    asyncio.run(submit_behind_the_engines_back())

    second = start_server(sqlite_url, cluster_config)
    try:
        client = second.client("alice")
        assert wait_final(client, experiment.id, 2 * DEADLINE[kind]) == "COMPLETED"
        tasks = all_tasks(client, experiment.id)
        assert [len(t["worker_assignment_history"]) for t in tasks] == [1, 1]
        runs = [t["result_summary"]["stdout_tail"] for t in tasks]
        assert runs == ["1\n", "2\n"]
    finally:
        second.stop()


def test_a_dropped_ssh_connection_never_fails_a_task(live, kind, request):
    if kind == "local":
        sshd = None
    else:
        sshd = request.getfixturevalue("torque_sshd" if kind == "pbs" else "sshd")
    client = live.client("alice")
    experiment_id = run_experiment(
        client, "sleep 3; echo {{ i }}", [{"i": str(i)} for i in range(3)]
    )
    wait_for(
        lambda: any(t["status"] == "RUNNING" for t in all_tasks(client, experiment_id)),
        DEADLINE[kind],
        "a running task",
    )

    if sshd is not None:
        assert sshd.drop_connections() >= 1
    else:
        subprocess.run(["true"], check=True)  # the local runner has no connection to drop

    assert wait_final(client, experiment_id, 2 * DEADLINE[kind]) == "COMPLETED"
    tasks = all_tasks(client, experiment_id)
    assert [len(t["worker_assignment_history"]) for t in tasks] == [1, 1, 1]


def slurm_config(sshd, slurm, **overrides):
    data = {
        "name": "slurm",
        "type": "slurm",
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "key_file": str(sshd.key_file),
        "known_hosts": str(sshd.known_hosts),
        "queue": slurm.partition,
        "work_dir": f"/home/hpcuser/airavata-tests/{uuid.uuid4().hex[:8]}",
        "poll_interval": 1.0,
        **overrides,
    }
    return parse_cluster(data, "test")


def test_a_request_the_batch_system_rejects_fails_at_once_with_its_words(sqlite_url, sshd, slurm):
    server = start_server(sqlite_url, slurm_config(sshd, slurm, queue="nosuchpartition"))
    try:
        client = server.client("alice")
        experiment_id = run_experiment(client, "true {{ i }}", [{"i": "1"}])
        assert wait_final(client, experiment_id, 60) == "FAILED"
        [task] = all_tasks(client, experiment_id)
        assert "rejected" in task["error_message"]
        assert "invalid partition" in task["error_message"].lower()
    finally:
        server.stop()


def test_an_unreachable_cluster_degrades_and_fails_nothing_then_recovers(
    sqlite_url, lab_dir, sshd, slurm
):
    import lab

    port = lab.free_port()
    known_hosts = lab_dir / f"known_hosts-{port}"
    kind, blob = sshd.host_key.with_suffix(".pub").read_text().split()[:2]
    known_hosts.write_text(f"[{sshd.host}]:{port} {kind} {blob}\n")
    config = slurm_config(sshd, slurm, port=port, known_hosts=str(known_hosts))
    server = start_server(sqlite_url, config)
    later = None
    try:
        client = server.client("alice")
        experiment_id = run_experiment(client, "echo {{ i }}", [{"i": "1"}, {"i": "2"}])
        health = wait_for(
            lambda: (
                (h := client.get("/health/detailed").json())["components"]["compute_resources"][
                    "status"
                ]
                != "healthy"
                and h
            ),
            60,
            "the cluster degraded",
        )
        assert health["components"]["compute_resources"]["details"]["slurm"]["last_error"]
        statuses = {t["status"] for t in all_tasks(client, experiment_id)}
        assert "FAILED" not in statuses and experiment_status(client, experiment_id) == "SUBMITTED"

        # The same host comes back (an sshd on that port with the same key): the run goes on.
        later = lab.SSHServer(lab_dir, port=port, name="sshd-late", set_env=slurm.env)
        later.host_key, later.key_file = sshd.host_key, sshd.key_file
        later.start()
        assert wait_final(client, experiment_id, 120) == "COMPLETED"
        tasks = all_tasks(client, experiment_id)
        assert [len(t["worker_assignment_history"]) for t in tasks] == [1, 1]
    finally:
        server.stop()
        if later is not None:
            later.stop(remove_key=False)
