"""Command runners for real: LocalRunner on this machine, SSHRunner against the lab's sshd.

The SSH tests use the lab (``tests/lab_fixtures.py``): a real OpenSSH server for ``hpcuser``
with the default ``MaxSessions`` of 10, and real Slurm, Grid Engine and torque wrappers behind
it for the end-to-end runs of the adapters at the bottom.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from pathlib import Path

import pytest

from airavata_hpc.adapters import BatchAdapter, BatchJob, JobElement, get_adapter
from airavata_hpc.clusters import parse_cluster
from airavata_hpc.command_template import render_command
from airavata_hpc.remote import (
    ClusterUnavailable,
    HealthState,
    LocalRunner,
    RemoteCommandError,
    RunnerPool,
    SSHRunner,
)
from airavata_hpc.scripts import parse_element_status
from airavata_hpc.states import TaskStatus

import lab

HOSTILE = [
    "plain",
    "two words",
    "it's",
    'double "quotes"',
    "$(touch /tmp/ah-pwned-remote); rm -rf ~",
    "`id`",
    "; echo injected",
    "*",
    "line\nbreak",
    "back\\slash",
    "",
    "-n",
]


async def poll(check, timeout: float, what: str):
    """Await ``check()`` until it returns something truthy, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def ssh_runner(server: lab.SSHServer, **options) -> SSHRunner:
    return SSHRunner(
        cluster=options.pop("cluster", "lab"),
        host=server.host,
        port=server.port,
        username=server.user,
        key_file=str(server.key_file),
        known_hosts=str(server.known_hosts),
        **options,
    )


def printed_args(stdout: str) -> list[str]:
    """Split ``printf '%s\\0' ARGS`` output back into the arguments."""
    return stdout.split("\0")[:-1]


# ---------------------------------------------------------------------------- LocalRunner


async def test_local_runner_passes_hostile_argv_verbatim():
    runner = LocalRunner()
    result = await runner.run(["printf", "%s\\0", *HOSTILE])
    assert printed_args(result.stdout) == HOSTILE
    assert not os.path.exists("/tmp/ah-pwned-remote")
    assert runner.stats.commands_issued == 1


async def test_local_runner_exit_status_and_errors():
    runner = LocalRunner("here")
    command = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    result = await runner.run(command, check=False)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(RemoteCommandError) as info:
        await runner.run(command)
    error = info.value
    assert (error.exit_status, error.transient, error.cluster) == (3, True, "here")
    for part in (
        "cluster here",
        "sh -c 'echo out; echo err >&2; exit 3'",
        "exit status: 3",
        "stdout: out",
        "stderr: err",
        "transient",
    ):
        assert part in str(error)
    with pytest.raises(RemoteCommandError) as missing:
        await runner.run(["/nonexistent/ah-command"])
    assert missing.value.exit_status == 127 and not missing.value.transient
    killed = await runner.run(["sh", "-c", "kill -KILL $$"], check=False)
    assert killed.exit_status == 128 + 9
    assert (await runner.run(["cat"], stdin="fed in\n")).stdout == "fed in\n"
    assert (await runner.run(["true"], retry_lost=True)).ok  # same signature as SSHRunner


async def test_local_runner_timeout_kills_the_whole_process_group(tmp_path):
    runner = LocalRunner()
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(RemoteCommandError) as info:
        await runner.run(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert info.value.transient and "timed out after 0.5 s" in str(info.value)
    child = int(pid_file.read_text())

    async def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"

    await poll(gone, 5, "the background child to be killed")


async def test_local_runner_files(tmp_path):
    runner = LocalRunner()
    files = {str(tmp_path / "a" / "b" / f"f{i}.txt"): f"content {i}\n" for i in range(5)}
    await runner.write_files(files)
    got = await runner.read_files([*files, str(tmp_path / "missing")])
    assert got == {**files, str(tmp_path / "missing"): None}
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == [
        f"f{i}.txt" for i in range(5)
    ]  # no temporary files left behind
    assert runner.health().state is HealthState.HEALTHY


# ---------------------------------------------------------------------------- SSHRunner


async def test_ssh_commands_and_hostile_argv(sshd):
    runner = ssh_runner(sshd)
    try:
        assert (await runner.run(["whoami"])).stdout.strip() == sshd.user
        result = await runner.run(["printf", "%s\\0", *HOSTILE])
        assert printed_args(result.stdout) == HOSTILE
        missing = await runner.run(["test", "-e", "/tmp/ah-pwned-remote"], check=False)
        assert missing.exit_status == 1
        failed = await runner.run(["sh", "-c", "echo no >&2; exit 4"], check=False)
        assert (failed.exit_status, failed.stderr) == (4, "no\n")
        with pytest.raises(RemoteCommandError) as info:
            await runner.run(["ah-no-such-command"])
        assert info.value.exit_status == 127 and not info.value.transient
        assert (await runner.run(["cat"], stdin="über\n")).stdout == "über\n"
        assert runner.stats.connections_opened == 1
        assert runner.stats.commands_issued == 6
        assert runner.health().state is HealthState.HEALTHY
    finally:
        await runner.close()


async def test_ssh_timeout_leaves_the_connection_usable(sshd):
    runner = ssh_runner(sshd)
    try:
        with pytest.raises(RemoteCommandError) as info:
            await runner.run(["sleep", "10"], timeout=0.5)
        assert info.value.transient and "timed out" in info.value.problem
        assert (await runner.run(["echo", "still here"])).stdout == "still here\n"
        assert runner.stats.connections_opened == 1
    finally:
        await runner.close()


async def test_ssh_files_in_one_batch(sshd):
    runner = ssh_runner(sshd)
    base = f"/tmp/ah-remote-{secrets.token_hex(4)}"
    try:
        files = {f"{base}/t{i}/deep/status": f"start={i}\nhost=x\n" for i in range(120)}
        files[f"{base}/unicode.txt"] = "naïve – ✓\n"
        await runner.write_files(files)
        got = await runner.read_files([*files, f"{base}/missing"])
        assert got[f"{base}/missing"] is None
        assert {path: got[path] for path in files} == files
        listing = await runner.run(["find", base, "-name", ".*tmp*"])
        assert listing.stdout == ""  # every file was renamed into place
        owner = await runner.run(["stat", "-c", "%U", f"{base}/t0/deep/status"])
        assert owner.stdout.strip() == sshd.user
        assert runner.stats.connections_opened == 1
        assert (runner.stats.files_written, runner.stats.files_read) == (121, 122)
        with pytest.raises(RemoteCommandError) as info:
            await runner.write_files({"/root/ah-not-allowed/x": "x"})
        assert not info.value.transient and "SFTPPermissionDenied" in info.value.problem
        assert runner.health().state is HealthState.HEALTHY  # an error reply, not an outage
    finally:
        await runner.run(["rm", "-rf", base], check=False)
        await runner.close()


async def test_ssh_concurrent_commands_share_one_connection(sshd):
    """20 commands at once against sshd's default MaxSessions=10: one connection, no failure.

    The default cap of 4 channels keeps sshd from ever refusing a channel.
    """
    assert sshd.max_sessions is None  # OpenSSH's default limit is in force
    runner = ssh_runner(sshd)
    try:
        results = await asyncio.gather(
            *(runner.run(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(20))
        )
        assert [r.stdout.strip() for r in results] == [str(i) for i in range(20)]
        assert runner.stats.connections_opened == 1
        assert runner.stats.commands_issued == 20
        assert runner.stats.channel_open_retries == 0
        assert runner.health().state is HealthState.HEALTHY
    finally:
        await runner.close()


async def test_ssh_refused_channels_are_retried_not_reported(sshd):
    """With 9 channels sshd refuses some opens ("no more sessions"); all commands still pass."""
    runner = ssh_runner(sshd, max_channels=9)
    try:
        for _round in range(5):  # refusals depend on timing; a few rounds make one certain
            results = await asyncio.gather(
                *(runner.run(["sh", "-c", "sleep 0.2; echo ok"]) for _ in range(30))
            )
            assert {r.stdout for r in results} == {"ok\n"}
            if runner.stats.channel_open_retries:
                break
        assert runner.stats.channel_open_retries > 0
        assert runner.stats.connections_opened == 1
    finally:
        await runner.close()


async def test_ssh_wrong_host_key_is_rejected(sshd, tmp_path, caplog):
    other = tmp_path / "other_key"
    lab.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)])
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    bad = tmp_path / "known_hosts"
    bad.write_text(f"[{sshd.host}]:{sshd.port} {kind} {blob}\n")
    runner = SSHRunner(
        cluster="spoofed",
        host=sshd.host,
        port=sshd.port,
        username=sshd.user,
        key_file=str(sshd.key_file),
        known_hosts=str(bad),
    )
    with pytest.raises(ClusterUnavailable) as info:
        await runner.run(["whoami"])
    assert "HostKeyNotVerifiable" in str(info.value)
    assert info.value.transient  # a monitoring outage, never a task failure
    assert runner.stats.connections_opened == 0
    assert runner.stats.connection_failures == 1  # not retried: it will not fix itself
    assert runner.health().state is HealthState.DEGRADED
    assert "HostKeyNotVerifiable" in runner.health().last_error

    with caplog.at_level(logging.WARNING, logger="airavata_hpc.remote"):
        insecure = SSHRunner(
            cluster="trusting",
            host=sshd.host,
            port=sshd.port,
            username=sshd.user,
            key_file=str(sshd.key_file),
            insecure_skip_host_key_check=True,
        )
    assert "host key checking is OFF" in caplog.text
    try:
        assert (await insecure.run(["whoami"])).stdout.strip() == sshd.user
    finally:
        await insecure.close()


@pytest.fixture
def private_sshd(lab_dir):
    """An sshd of this test's own, so that dropping connections disturbs no other test."""
    server = lab.SSHServer(lab_dir, name=f"sshd-remote-{secrets.token_hex(3)}")
    server.start()
    yield server
    server.stop()


async def test_ssh_reconnects_after_a_dropped_connection(private_sshd):
    runner = ssh_runner(private_sshd)
    try:
        assert (await runner.run(["echo", "one"])).stdout == "one\n"
        assert private_sshd.drop_connections() >= 1
        assert (await runner.run(["echo", "two"])).stdout == "two\n"
        assert runner.stats.connections_opened == 2

        # A command running while the link drops is reported as a transient failure...
        token = secrets.token_hex(6)
        running = asyncio.create_task(runner.run(["sh", "-c", f"sleep 5; : {token}"]))
        await poll(lambda: _remote_running(token), 5, "the remote sleep to start")
        started = time.monotonic()
        private_sshd.drop_connections()
        with pytest.raises(ClusterUnavailable) as info:
            await running
        assert time.monotonic() - started < 4
        assert info.value.transient and "connection lost" in info.value.problem
        # ... and the next command reconnects.
        assert (await runner.run(["echo", "three"])).stdout == "three\n"
        assert runner.stats.connections_opened == 3

        # A command that is safe to repeat (retry_lost) is run again after a drop.
        marker = f"/tmp/ah-retry-{secrets.token_hex(4)}"
        token = secrets.token_hex(6)
        repeatable = asyncio.create_task(
            runner.run(
                ["sh", "-c", f"echo x >> {marker}; sleep 1; echo done; : {token}"],
                retry_lost=True,
            )
        )
        await poll(lambda: _remote_running(token), 5, "the first run to start")
        private_sshd.drop_connections()
        assert (await repeatable).stdout == "done\n"
        assert Path(marker).read_text() == "x\nx\n"  # it ran twice
        Path(marker).unlink()
        assert runner.stats.connections_opened == 4
        assert runner.health().state is HealthState.HEALTHY
    finally:
        await runner.close()


async def _remote_running(token: str) -> bool:
    """Whether a process whose command line holds ``token`` runs (the remote shell)."""
    out = await asyncio.to_thread(lab.run, ["pgrep", "-f", token], check=False)
    return bool(out.stdout.strip())


async def test_ssh_circuit_breaker_opens_on_a_closed_port_and_recovers(sshd):
    now = [1000.0]
    runner = ssh_runner(
        sshd,
        cluster="flaky",
        connect_attempts=1,
        breaker_threshold=3,
        breaker_cooldown=60.0,
        clock=lambda: now[0],
    )
    runner.port = lab.free_port()  # nothing listens there
    try:
        for attempt in range(3):
            with pytest.raises(ClusterUnavailable) as info:
                await runner.run(["true"])
            assert "cannot connect" in info.value.problem
            assert runner.stats.connection_failures == attempt + 1
        health = runner.health()
        assert health.state is HealthState.UNHEALTHY
        assert health.consecutive_failures == 3 and health.retry_in == 60.0
        assert "refused" in health.last_error.lower()

        started = time.monotonic()
        with pytest.raises(ClusterUnavailable) as info:
            await runner.run(["true"])
        assert "circuit open" in info.value.problem and info.value.transient
        assert time.monotonic() - started < 0.1  # failed fast
        assert runner.stats.connection_failures == 3  # no new attempt was made

        now[0] += 61  # cool-down over: one attempt goes through, fails, opens again
        with pytest.raises(ClusterUnavailable, match="cannot connect"):
            await runner.run(["true"])
        assert runner.stats.connection_failures == 4
        assert runner.health().state is HealthState.UNHEALTHY

        runner.port = sshd.port  # the cluster is back
        now[0] += 61
        assert (await runner.run(["echo", "ok"])).stdout == "ok\n"
        assert runner.health().state is HealthState.HEALTHY
        assert runner.health().consecutive_failures == 0
    finally:
        await runner.close()


async def test_ssh_reconnect_backs_off_between_attempts(sshd):
    runner = ssh_runner(sshd, connect_attempts=3, backoff_base=0.2, breaker_threshold=10)
    runner.port = lab.free_port()
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable):
        await runner.run(["true"])
    # Two waits between three attempts: at least 0.1 + 0.2 s with jitter, at most 0.2 + 0.4.
    assert 0.3 <= time.monotonic() - started < 3
    assert runner.stats.connection_failures == 3
    assert runner.health().state is HealthState.DEGRADED


def test_runner_pool_shares_one_runner_per_cluster_and_user(tmp_path, sshd):
    local = parse_cluster({"name": "here", "type": "local", "work_dir": str(tmp_path)}, "t")
    remote = parse_cluster(
        {
            "name": "lab",
            "type": "slurm",
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "key_file": str(sshd.key_file),
            "known_hosts": str(sshd.known_hosts),
            "work_dir": "/tmp/x",
        },
        "t",
    )
    pool = RunnerPool()
    assert isinstance(pool.get(local), LocalRunner)
    ssh = pool.get(remote)
    assert isinstance(ssh, SSHRunner) and ssh.port == sshd.port and ssh.max_channels == 4
    assert pool.get(remote) is ssh
    assert set(pool.health()) == {"here", "lab"}
    asyncio.run(pool.close())
    assert pool.runners() == {}


# ---------------------------------------------------------------------------- end to end


def sweep_job(adapter: BatchAdapter, work_dir: str, name: str, **kwargs) -> BatchJob:
    """Three elements: print a hostile value, exit 0 / 3 / 0."""
    template = "printf '%s\\n' {{ value }} > out.txt; exit {{ code }}"
    values = [("a b", "0"), ("$(touch /tmp/ah-pwned-e2e); rm -rf ~", "3"), ("it's", "0")]
    elements = tuple(
        JobElement(i, f"{work_dir}/t{i}", render_command(template, {"value": v, "code": c}))
        for i, (v, c) in enumerate(values)
    )
    return BatchJob(name=name, work_dir=work_dir, elements=elements, walltime_seconds=300, **kwargs)


async def run_sweep(runner, adapter: BatchAdapter, work_dir: str, **kwargs) -> dict:
    """Submit a 3-element array through ``runner``, poll until every status file has an end."""
    name = f"ah-{secrets.token_hex(4)}"
    job = sweep_job(adapter, work_dir, name, **kwargs)
    await runner.write_files({job.script_path: adapter.render_script(job)})
    submitted = await runner.run(adapter.submit_command(job.script_path))
    native = adapter.parse_submit_output(submitted.stdout)
    ids = adapter.element_job_ids(native, job)
    seen: dict[str, set[TaskStatus]] = {job_id: set() for job_id in ids.values()}
    status_paths = [f"{e.task_dir}/status" for e in job.elements]

    async def all_ended():
        out = await runner.run(adapter.status_command(list(ids.values())), check=False)
        assert adapter.status_output_usable(out.exit_status, out.stderr), out
        for job_id, status in adapter.parse_status_output(out.stdout).items():
            if job_id in seen:
                seen[job_id].add(status.status)
        files = await runner.read_files(status_paths)
        parsed = [parse_element_status(files[p]) for p in status_paths]
        return parsed if all(s is not None and s.finished for s in parsed) else None

    statuses = await poll(all_ended, 60, f"{adapter.type_name} job {native} to end")
    outputs = await runner.read_files([f"{e.task_dir}/out.txt" for e in job.elements])
    found = await runner.run(adapter.find_jobs_by_name_command(name), check=False)
    return {
        "native": native,
        "ids": ids,
        "exit_codes": [s.exit_code for s in statuses],
        "outputs": [outputs[f"{e.task_dir}/out.txt"] for e in job.elements],
        "seen": seen,
        "found": adapter.parse_find_jobs_output(found.stdout, name),
        "statuses": statuses,
    }


EXPECTED_OUTPUTS = ["a b\n", "$(touch /tmp/ah-pwned-e2e); rm -rf ~\n", "it's\n"]


async def remote_work_dir(runner) -> str:
    return (await runner.run(["mktemp", "-d", "/tmp/ah-e2e-XXXXXX"])).stdout.strip()


async def test_slurm_array_end_to_end_over_ssh(sshd, slurm):
    runner = ssh_runner(sshd)
    adapter = get_adapter("slurm")
    try:
        work_dir = await remote_work_dir(runner)
        result = await run_sweep(runner, adapter, work_dir, partition=slurm.partition)
        assert result["exit_codes"] == [0, 3, 0]
        assert result["outputs"] == EXPECTED_OUTPUTS
        native = result["native"]
        assert result["ids"] == {i: f"{native}_{i}" for i in range(3)}
        assert result["found"] == [native]

        # The scheduler's own view follows (elements may still be COMPLETING for a moment).
        async def scheduler_final():
            out = await runner.run(adapter.status_command([]))
            found = adapter.parse_status_output(out.stdout)
            ended = all(found[job_id].status.is_final for job_id in result["ids"].values())
            return found if ended else None

        states = await poll(scheduler_final, 30, "Slurm to report every element final")
        assert states[f"{native}_0"].status is TaskStatus.COMPLETED
        assert states[f"{native}_1"].status is TaskStatus.FAILED
        assert states[f"{native}_1"].reason == "NonZeroExitCode"
        assert not (await runner.run(["test", "-e", "/tmp/ah-pwned-e2e"], check=False)).ok
        version = await runner.run(adapter.version_command())
        assert adapter.parse_version_output(version.stdout).endswith("22.05.8")
        for queue, exists in ((slurm.partition, True), ("ah-no-such-partition", False)):
            check = await runner.run(adapter.queue_check_command(queue), check=False)
            assert adapter.queue_exists(check.exit_status, check.stdout) is exists
        assert runner.stats.connections_opened == 1
        await runner.run(["rm", "-rf", work_dir])
    finally:
        await runner.close()


async def test_slurm_cancel_records_the_signal_in_the_status_file(sshd, slurm):
    runner = ssh_runner(sshd)
    adapter = get_adapter("slurm")
    try:
        work_dir = await remote_work_dir(runner)
        job = BatchJob(
            name=f"ah-{secrets.token_hex(4)}",
            work_dir=work_dir,
            walltime_seconds=300,
            elements=(JobElement(0, f"{work_dir}/t0", "sleep 300"),),
        )
        await runner.write_files({job.script_path: adapter.render_script(job)})
        native = adapter.parse_submit_output(
            (await runner.run(adapter.submit_command(job.script_path))).stdout
        )
        status_path = f"{work_dir}/t0/status"

        async def started():
            return parse_element_status((await runner.read_files([status_path]))[status_path])

        assert (await poll(started, 30, "the element to start")).end is None
        await runner.run(adapter.cancel_command([native]))

        async def ended():
            status = await started()
            return status if status.finished else None

        status = await poll(ended, 30, "the cancelled element to write its end")
        assert status.exit_code == 143  # SIGTERM, passed on by the wrapper

        async def scheduler_says_cancelled():
            out = await runner.run(adapter.status_command([native]))
            return adapter.parse_status_output(out.stdout)[native].status is TaskStatus.CANCELLED

        # The file can be complete while Slurm still shows COMPLETING (RUNNING for us).
        await poll(scheduler_says_cancelled, 30, "Slurm to report the job cancelled")
        await runner.run(["rm", "-rf", work_dir])
    finally:
        await runner.close()


async def test_sge_array_end_to_end_over_ssh(sshd, gridengine):
    runner = ssh_runner(sshd)
    adapter = get_adapter("sge")
    try:
        work_dir = await remote_work_dir(runner)
        result = await run_sweep(runner, adapter, work_dir, partition=gridengine.queue)
        assert result["exit_codes"] == [0, 3, 0]
        assert result["outputs"] == EXPECTED_OUTPUTS
        native = result["native"]
        assert result["ids"] == {i: f"{native}.{i + 1}" for i in range(3)}

        # The status files may have their end while qstat still shows the tasks running (the
        # job script is still exiting); then Grid Engine forgets them at once: absent.
        async def forgotten():
            out = await runner.run(adapter.status_command([]))
            return not set(result["ids"].values()) & set(adapter.parse_status_output(out.stdout))

        await poll(forgotten, 30, "Grid Engine to forget the finished tasks")
        assert {TaskStatus.RUNNING, TaskStatus.QUEUED} & set().union(*result["seen"].values())
        version = await runner.run(adapter.version_command(), check=False)
        assert adapter.parse_version_output(version.stdout) == "SGE 8.1.9"
        queue = await runner.run(adapter.queue_check_command(gridengine.queue), check=False)
        assert adapter.queue_exists(queue.exit_status, queue.stdout)
        await runner.run(["rm", "-rf", work_dir])
    finally:
        await runner.close()


async def test_torque_wrappers_end_to_end_over_ssh(torque_sshd):
    runner = ssh_runner(torque_sshd, cluster="torque-lab")
    adapter = get_adapter("pbs", flavor="torque")
    try:
        work_dir = await remote_work_dir(runner)
        result = await run_sweep(runner, adapter, work_dir)
        assert result["exit_codes"] == [0, 3, 0]
        assert result["outputs"] == EXPECTED_OUTPUTS
        native = result["native"]
        assert result["ids"] == {i: f"{native}[{i}]" for i in range(3)}
        assert result["found"] == [native]
        # qstat cannot tell array elements apart; the squeue beside the wrappers can.
        assert all(result["seen"][job_id] for job_id in result["ids"].values())

        async def scheduler_final():
            out = await runner.run(adapter.status_command(list(result["ids"].values())))
            found = adapter.parse_status_output(out.stdout)
            return found if all(found[i].status.is_final for i in result["ids"].values()) else 0

        final = await poll(scheduler_final, 30, "the wrappers' Slurm to report the end")
        assert final[f"{native}[1]"].status is TaskStatus.FAILED
        assert final[f"{native}[2]"].status is TaskStatus.COMPLETED
        version = await runner.run(adapter.version_command())
        assert "22.05" in adapter.parse_version_output(version.stdout)
        await runner.run(["rm", "-rf", work_dir])
    finally:
        await runner.close()
