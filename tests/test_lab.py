"""The lab's daemons are real and reachable: Slurm, Grid Engine and the PBS wrappers over SSH.

Run with ``python -m pytest tests/test_lab.py -o pythonpath=tests -p lab_fixtures`` as root.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncssh
import pytest

import lab

T = TypeVar("T")

SLURM_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


async def poll(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Await ``check`` until it returns something other than None, within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


async def sh(conn: asyncssh.SSHClientConnection, command: str, ok: bool = True) -> str:
    """Run ``command`` over ``conn``; return stdout (and require exit 0 if ``ok``)."""
    result = await conn.run(command, check=False)
    if ok:
        assert result.exit_status == 0, f"{command!r}: {result.exit_status} {result.stderr!r}"
    return str(result.stdout)


def test_slurm_exit_code_over_ssh(sshd: lab.SSHServer, slurm: lab.SlurmCluster) -> None:
    async def main() -> str:
        async with asyncssh.connect(**sshd.connect_kwargs()) as conn:
            submit = "sbatch --parsable --output=/dev/null --wrap 'exit 7'"
            job_id = (await sh(conn, submit)).strip()
            assert re.fullmatch(r"\d+", job_id), job_id

            async def ended() -> str | None:
                line = await sh(conn, f"scontrol show job -o {job_id}")
                state = re.search(r"JobState=(\S+)", line)
                return line if state and state.group(1) in SLURM_ENDED else None

            return await poll(ended, 30, f"Slurm job {job_id} to end")

    line = asyncio.run(main())
    assert "JobState=FAILED" in line
    assert "ExitCode=7:0" in line
    assert f"Partition={slurm.partition}" in line


def test_gridengine_job_over_ssh(sshd: lab.SSHServer, gridengine: lab.GridEngine) -> None:
    async def main() -> tuple[str, str]:
        async with asyncssh.connect(**sshd.connect_kwargs()) as conn:
            workdir = (await sh(conn, "mktemp -d -p ~ sge-XXXXXX")).strip()
            script = f'#!/bin/bash\necho "ran in $JOB_ID" > {workdir}/out\nexit 3\n'
            async with conn.start_sftp_client() as sftp:
                async with sftp.open(f"{workdir}/job.sh", "w") as f:
                    await f.write(script)
            job_id = (await sh(conn, f"cd {workdir} && qsub -terse -cwd job.sh")).strip()
            assert re.fullmatch(r"\d+", job_id), job_id

            async def accounted() -> str | None:
                out = await sh(conn, f"qacct -j {job_id}", ok=False)
                return out if re.search(r"^exit_status\s", out, re.M) else None

            acct = await poll(accounted, 30, f"qacct record of SGE job {job_id}")
            written = await sh(conn, f"cat {workdir}/out")
            await sh(conn, f"rm -rf {workdir}")
            return acct, written.strip()

    acct, written = asyncio.run(main())
    assert re.search(r"^exit_status\s+3\s*$", acct, re.M), acct
    assert re.search(rf"^qname\s+{re.escape(gridengine.queue)}\s*$", acct, re.M), acct
    assert written.startswith("ran in "), written


def test_torque_qsub_drives_slurm(torque_sshd: lab.SSHServer, sshd: lab.SSHServer) -> None:
    async def main() -> tuple[str, str, str, str]:
        async with asyncssh.connect(**torque_sshd.connect_kwargs()) as conn:
            qsub_path = (await sh(conn, "command -v qsub")).strip()
            workdir = (await sh(conn, "mktemp -d -p ~ pbs-XXXXXX")).strip()
            script = (
                "#!/bin/bash\n#PBS -N labpbs\n#PBS -l walltime=00:05:00\n"
                f'echo "pbs job $SLURM_JOB_ID" > {workdir}/out\n'
            )
            await sh(conn, f"cat > {workdir}/job.pbs << 'EOF'\n{script}EOF")
            job_id = (await sh(conn, f"cd {workdir} && qsub job.pbs")).strip()
            assert re.fullmatch(r"\d+", job_id), job_id

            async def finished() -> str | None:
                out = await sh(conn, f"qstat -f {job_id}", ok=False)
                return out if re.search(r"job_state = C\b", out) else None

            full = await poll(finished, 30, f"torque-wrapper job {job_id} to complete")
            written = (await sh(conn, f"cat {workdir}/out")).strip()
            await sh(conn, f"rm -rf {workdir}")
        async with asyncssh.connect(**sshd.connect_kwargs()) as plain:
            other_qsub = (await sh(plain, "command -v qsub")).strip()
        return qsub_path, other_qsub, full, written

    qsub_path, other_qsub, full, written = asyncio.run(main())
    assert qsub_path == str(lab.TorqueWrappers().bin_dir / "qsub")
    assert other_qsub == "/usr/bin/qsub"  # Grid Engine's, on the first sshd
    assert "Job_Name = labpbs" in full
    assert written.startswith("pbs job "), written


def test_wrong_host_key_is_rejected(sshd: lab.SSHServer, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    lab.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)])
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    bad = tmp_path / "known_hosts"
    bad.write_text(f"[{sshd.host}]:{sshd.port} {kind} {blob}\n")

    async def main() -> None:
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await asyncssh.connect(**{**sshd.connect_kwargs(), "known_hosts": str(bad)})
        async with asyncssh.connect(**sshd.connect_kwargs()) as conn:
            assert (await sh(conn, "whoami")).strip() == sshd.user

    asyncio.run(main())


def test_drop_connections_and_restart(lab_dir: Path) -> None:
    server = lab.SSHServer(lab_dir, name="sshd-drop")
    server.start()
    try:

        async def main() -> None:
            conn = await asyncssh.connect(**server.connect_kwargs())
            assert (await sh(conn, "echo up")).strip() == "up"
            assert server.drop_connections() >= 1
            with pytest.raises((asyncssh.Error, OSError)):
                await asyncio.wait_for(conn.run("echo again", check=True), 10)
            conn.close()
            port = server.port
            server.restart()
            assert server.port == port
            async with asyncssh.connect(**server.connect_kwargs()) as again:
                assert (await sh(again, "echo back")).strip() == "back"

        asyncio.run(main())
    finally:
        server.stop()
    assert server.pid is None
