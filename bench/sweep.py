"""Makespan of a parameter sweep on the lab's real Slurm: one job array by hand vs. the service.

The benchmark starts its own lab (``tests/lab.py``: a one-node Slurm 22.05 with 16 CPUs and an
OpenSSH server on loopback, in a scratch directory; ``tests/lab/install.sh`` first if needed)
and stops it at the end, also after an error, Ctrl-C or SIGTERM. Slurm runs with
``MinJobAge=3600`` so that finished elements stay visible to ``squeue --states=all`` (the
engine's ``squeue --me`` therefore also lists the finished raw and warm-up elements). A small
untimed warm-up array runs first: a fresh controller and node start their first jobs slower.

1. Raw baseline: over SSH as ``hpcuser`` (asyncssh, host key checked against the lab's
   known_hosts) it writes a batch script that runs ``true`` and submits it as ONE
   ``sbatch --array=0-(N-1)`` with stdout and stderr to /dev/null, then runs ``squeue`` on the
   array every 0.5 s until every element is in a final state. Makespan: from just before
   ``sbatch`` until the poll that sees the last element finished.
2. Service: the real server and engine in this process (``tests/support.py``'s ``LiveServer``,
   SQLite in a temporary directory), with the same Slurm over the same sshd (poll_interval 1 s,
   max_array_size 1000). It creates an experiment of N parameter sets running ``true {{ i }}``
   and submits it. Makespan: from the submit call until ``GET /experiments/{id}`` (asked every
   0.25 s) says COMPLETED.

In this process only, the engine's ``_poll``, ``_submit`` and ``run_cycle`` and its runner's
``run``/``read_files``/``write_files`` are wrapped to read the counters that ``ClusterRuntime``
(``commands``) and the runner (``stats``) keep, before and after each poll, and to time them.

It prints figures and whether the targets are met (service makespan at most 1.25 times the raw
array's, one SSH connection per cluster, at most 2 scheduler commands per poll cycle); its exit
status never depends on timing. Other work on the machine shows up in the figures: the load
average is printed before and after.

    /work/venv/bin/python bench/sweep.py                    # 1,000 tasks, a few minutes
    /work/venv/bin/python bench/sweep.py --tasks 200 --skip-raw
    /work/venv/bin/python bench/sweep.py --profile          # plus a cProfile of engine cycles
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import posixpath
import pstats
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh

from airavata_hpc.adapters.slurm import STATE_MAP
from airavata_hpc.clusters import parse_cluster
from airavata_hpc.engine import Engine
from airavata_hpc.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import lab  # noqa: E402
from support import LiveServer  # noqa: E402

MIN_JOB_AGE = 3600
POLL_INTERVAL = 1.0
MAX_ARRAY_SIZE = 1000
RAW_POLL_SECONDS = 0.5
WARM_UP_TASKS = 32
API_POLL_SECONDS = 0.25
TARGET_RATIO = 1.25
TARGET_CONNECTIONS = 1
TARGET_COMMANDS_PER_POLL = 2
FINAL_EXPERIMENT = ("COMPLETED", "FAILED", "CANCELLED")

RAW_SCRIPT = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --chdir={work_dir}
#SBATCH --output=/dev/null
#SBATCH --error=/dev/null
#SBATCH --time=0-00:30:00
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --partition={partition}
#SBATCH --array=0-{last}
true
"""


class Interrupted(Exception):
    """SIGTERM arrived; unwinding stops the lab."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _is_final(slurm_state: str) -> bool:
    status = STATE_MAP.get(slurm_state.split()[0].rstrip("+")) if slurm_state else None
    return status is not None and status.is_final


# ---------------------------------------------------------------------------------------------
# Raw baseline


@dataclass
class RawResult:
    job_id: str
    submit_seconds: float
    makespan: float
    polls: int
    states: dict[str, int]


async def run_raw(
    sshd: lab.SSHServer,
    partition: str,
    tasks: int,
    remote_dir: str,
    timeout: float,
    label: str = "raw",
) -> RawResult:
    """One ``sbatch --array`` of ``true`` by hand, polled with ``squeue`` every 0.5 s."""
    name = f"bench-{label}-{uuid.uuid4().hex[:8]}"
    work_dir = f"{remote_dir}/{name}"
    script = f"{work_dir}/array.sh"
    text = RAW_SCRIPT.format(name=name, work_dir=work_dir, partition=partition, last=tasks - 1)
    async with asyncssh.connect(**sshd.connect_kwargs()) as conn:
        await conn.run(
            f"mkdir -p {shlex.quote(work_dir)} && cat > {shlex.quote(script)}",
            input=text,
            check=True,
        )
        start = time.monotonic()
        submitted = await conn.run(f"sbatch --parsable {shlex.quote(script)}", check=True)
        submit_seconds = time.monotonic() - start
        job_id = str(submitted.stdout).strip().splitlines()[-1].split(";")[0]
        query = f"squeue --noheader --array --states=all --jobs={job_id} --format='%i|%T'"
        polls = 0
        while True:
            polls += 1
            tick = start + polls * RAW_POLL_SECONDS
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            result = await conn.run(query, check=False)
            seen = time.monotonic()
            if result.exit_status != 0:
                continue  # a busy controller ("socket timed out"): ask again next tick
            states: dict[str, int] = {}
            for line in str(result.stdout).splitlines():
                _, sep, state = line.strip().partition("|")
                if sep:
                    states[state] = states.get(state, 0) + 1
            finished = sum(n for state, n in states.items() if _is_final(state))
            if finished >= tasks:
                return RawResult(job_id, submit_seconds, seen - start, polls, states)
            if seen - start > timeout:
                raise RuntimeError(
                    f"{label} array {job_id}: only {finished} of {tasks} elements finished "
                    f"after {timeout:.0f} s: {states}"
                )


# ---------------------------------------------------------------------------------------------
# Service


@dataclass
class PollSample:
    started: float
    seconds: float
    remote_seconds: float
    commands: int  # ClusterRuntime.commands: what the engine counts as scheduler commands
    exec_channels: int  # runner.stats.commands_issued: every command over SSH
    sftp_sessions: int
    files_read: int
    last_poll_commands: int


@dataclass
class CycleSample:
    started: float
    seconds: float


@dataclass
class Recorder:
    """What the wrapped engine methods saw; filled in the server's thread."""

    profile: bool = False
    polls: list[PollSample] = field(default_factory=list)
    cycles: list[CycleSample] = field(default_factory=list)
    submits: list[float] = field(default_factory=list)
    remote_seconds: float = 0.0
    sftp_reads: int = 0
    sftp_writes: int = 0
    engine: Engine | None = None
    profiler: cProfile.Profile | None = None

    def instrument(self, engine: Engine) -> Engine:
        self.engine = engine
        if self.profile:
            self.profiler = cProfile.Profile()
        cluster = engine.clusters[0]
        runner = cluster.runner
        original_run = runner.run
        original_read = runner.read_files
        original_write = runner.write_files
        original_poll = engine._poll
        original_submit = engine._submit
        original_cycle = engine.run_cycle

        def timed(call: Callable[..., Any], counter: str | None = None) -> Callable[..., Any]:
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                if counter:
                    setattr(self, counter, getattr(self, counter) + 1)
                began = time.monotonic()
                try:
                    return await call(*args, **kwargs)
                finally:
                    self.remote_seconds += time.monotonic() - began

            return wrapper

        async def poll(target: Any) -> None:
            stats = target.runner.stats
            before = (
                target.commands,
                stats.commands_issued,
                self.sftp_reads,
                stats.files_read,
                self.remote_seconds,
            )
            began = time.monotonic()
            try:
                await original_poll(target)
            finally:
                self.polls.append(
                    PollSample(
                        started=began,
                        seconds=time.monotonic() - began,
                        remote_seconds=self.remote_seconds - before[4],
                        commands=target.commands - before[0],
                        exec_channels=stats.commands_issued - before[1],
                        sftp_sessions=self.sftp_reads - before[2],
                        files_read=stats.files_read - before[3],
                        last_poll_commands=target.last_poll_commands,
                    )
                )

        async def submit(*args: Any, **kwargs: Any) -> None:
            try:
                await original_submit(*args, **kwargs)
            finally:
                self.submits.append(time.monotonic())

        async def run_cycle(*args: Any, **kwargs: Any) -> None:
            began = time.monotonic()
            if self.profiler is not None:
                self.profiler.enable()
            try:
                await original_cycle(*args, **kwargs)
            finally:
                if self.profiler is not None:
                    self.profiler.disable()
                self.cycles.append(CycleSample(began, time.monotonic() - began))

        runner.run = timed(original_run)
        runner.read_files = timed(original_read, "sftp_reads")
        runner.write_files = timed(original_write, "sftp_writes")
        engine._poll = poll
        engine._submit = submit
        engine.run_cycle = run_cycle
        return engine


@dataclass
class ServiceResult:
    create_seconds: float
    submit_call_seconds: float
    sbatch_done: float | None
    last_element_end: float | None
    first_element_start: float | None
    makespan: float
    status: str
    task_states: dict[str, int]
    api_polls: int
    api_latency_max: float
    commands_total: int
    commands_in_polls: int
    exec_channels_total: int
    sftp_reads: int
    sftp_writes: int
    connections: int
    polls: list[PollSample]
    cycles: list[CycleSample]
    profile_text: str = ""


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _all_tasks(client: Any, experiment_id: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = client.get(
            f"/experiments/{experiment_id}/tasks", params={"limit": 100, "offset": offset}
        ).json()
        tasks += page["tasks"]
        offset += 100
        if offset >= page["total"]:
            return tasks


def run_service(
    sshd: lab.SSHServer,
    partition: str,
    tasks: int,
    remote_dir: str,
    db_dir: Path,
    timeout: float,
    profile: bool,
) -> ServiceResult:
    config = parse_cluster(
        {
            "name": "slurm",
            "type": "slurm",
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "key_file": str(sshd.key_file),
            "known_hosts": str(sshd.known_hosts),
            "queue": partition,
            "work_dir": f"{remote_dir}/service",
            "poll_interval": POLL_INTERVAL,
            "max_array_size": MAX_ARRAY_SIZE,
            "max_queued_jobs": max(1000, tasks),
        },
        "bench/sweep.py",
    )
    recorder = Recorder(profile=profile)

    def factory(settings: Settings, metrics: Any) -> Engine:
        return recorder.instrument(Engine([config], metrics))

    settings = Settings(port=0, database_url=f"sqlite:///{db_dir / 'bench.db'}")
    live = LiveServer(settings, engine_factory=factory).start()
    try:
        client = live.client("bench")
        body = {
            "name": f"sweep-{tasks}",
            "project_id": "bench",
            "command_template": "true {{ i }}",
            "parameters": [{"id": f"s{i}", "values": {"i": str(i)}} for i in range(tasks)],
        }
        began = time.monotonic()
        created = client.post("/experiments", json=body)
        create_seconds = time.monotonic() - began
        if created.status_code != 201:
            raise RuntimeError(f"create failed: {created.status_code} {created.text[:500]}")
        experiment_id = created.json()["id"]
        assert recorder.engine is not None
        cluster = recorder.engine.clusters[0]
        commands_before = cluster.commands
        channels_before = cluster.runner.stats.commands_issued

        wall_start = time.time()
        start = time.monotonic()
        submitted = client.post(f"/experiments/{experiment_id}/submit")
        submit_call_seconds = time.monotonic() - start
        if submitted.status_code != 200:
            raise RuntimeError(f"submit failed: {submitted.status_code} {submitted.text[:500]}")
        api_polls = 0
        latency_max = 0.0
        while True:
            api_polls += 1
            tick = start + api_polls * API_POLL_SECONDS
            time.sleep(max(0.0, tick - time.monotonic()))
            asked = time.monotonic()
            status = client.get(f"/experiments/{experiment_id}").json()["status"]
            seen = time.monotonic()
            latency_max = max(latency_max, seen - asked)
            if status in FINAL_EXPERIMENT:
                break
            if seen - start > timeout:
                raise RuntimeError(f"experiment still {status} after {timeout:.0f} s")
        makespan = seen - start
        commands_total = cluster.commands - commands_before
        channels_total = cluster.runner.stats.commands_issued - channels_before
        window = [p for p in recorder.polls if start <= p.started <= seen]
        cycles = [c for c in recorder.cycles if start <= c.started <= seen]
        submits = [t - start for t in recorder.submits if t >= start]

        listed = _all_tasks(client, experiment_id)
        states: dict[str, int] = {}
        for task in listed:
            states[task["status"]] = states.get(task["status"], 0) + 1
        ends = [e for e in (_epoch(t.get("completed_at")) for t in listed) if e is not None]
        starts = [s for s in (_epoch(t.get("started_at")) for t in listed) if s is not None]
        profile_text = ""
        if recorder.profiler is not None:
            out = io.StringIO()
            stats = pstats.Stats(recorder.profiler, stream=out)
            stats.sort_stats("tottime").print_stats(18)
            stats.sort_stats("cumulative").print_stats("airavata_hpc|adapters|peewee", 18)
            profile_text = out.getvalue()
        return ServiceResult(
            create_seconds=create_seconds,
            submit_call_seconds=submit_call_seconds,
            sbatch_done=submits[0] if submits else None,
            last_element_end=max(ends) - wall_start if ends else None,
            first_element_start=min(starts) - wall_start if starts else None,
            makespan=makespan,
            status=status,
            task_states=states,
            api_polls=api_polls,
            api_latency_max=latency_max,
            commands_total=commands_total,
            commands_in_polls=sum(p.commands for p in window),
            exec_channels_total=channels_total,
            sftp_reads=sum(p.sftp_sessions for p in window),
            sftp_writes=recorder.sftp_writes,
            connections=cluster.runner.stats.connections_opened,
            polls=window,
            cycles=cycles,
            profile_text=profile_text,
        )
    finally:
        live.stop()


# ---------------------------------------------------------------------------------------------
# Report


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(raw: RawResult | None, service: ServiceResult | None, tasks: int) -> None:
    if raw is None and service is None:
        return
    print()
    print(f"== results ({tasks} tasks of `true`) ==")
    if raw is not None:
        print(
            f"raw sbatch --array    job {raw.job_id}: makespan {raw.makespan:7.2f} s   "
            f"throughput {tasks / raw.makespan:6.1f} tasks/s"
        )
        print(
            f"  sbatch took {raw.submit_seconds:.2f} s; {raw.polls} squeue polls at "
            f"{RAW_POLL_SECONDS:g} s; final states {raw.states}"
        )
    if service is None:
        return
    s = service
    print(
        f"service (REST+engine) experiment {s.status}: makespan {s.makespan:7.2f} s   "
        f"throughput {tasks / s.makespan:6.1f} tasks/s"
    )
    print(
        f"  create (POST, {tasks} sets) {s.create_seconds:.2f} s; submit call "
        f"{s.submit_call_seconds:.3f} s; task states {s.task_states}"
    )
    milestones = [
        ("engine _submit done (sbatch + DB: all QUEUED)", s.sbatch_done),
        ("first element started (status file, 1 s res.)", s.first_element_start),
        ("last element ended (status file, 1 s res.)", s.last_element_end),
        ("experiment COMPLETED seen over REST", s.makespan),
    ]
    for label, value in milestones:
        shown = f"{value:7.2f} s" if value is not None else "      -"
        print(f"  +{shown}  {label}")
    if s.last_element_end is not None:
        print(
            f"  detection lag after the last element ended: {s.makespan - s.last_element_end:.2f} s"
            f" (poll_interval {POLL_INTERVAL:g} s, REST poll {API_POLL_SECONDS:g} s)"
        )
    print(
        f"  REST status polls: {s.api_polls}, slowest answer {s.api_latency_max * 1000:.0f} ms "
        "(the engine shares the server's event loop)"
    )
    if raw is not None:
        ratio = s.makespan / raw.makespan
        print(
            f"ratio service/raw: {ratio:.2f}x   (target <= {TARGET_RATIO}x: "
            f"{_met(ratio <= TARGET_RATIO)})"
        )
    print(
        f"SSH connections opened by the engine for the cluster: {s.connections}   "
        f"(target {TARGET_CONNECTIONS}: {_met(s.connections <= TARGET_CONNECTIONS)})"
    )
    busy = [p for p in s.polls if p.commands > 0]
    per_poll = [p.commands for p in s.polls] or [0]
    print(
        f"scheduler commands (ClusterRuntime.commands) from submit to COMPLETED: "
        f"{s.commands_total} ({s.commands_in_polls} in polls, "
        f"{s.commands_total - s.commands_in_polls} outside: sbatch)"
    )
    print(
        f"  poll cycles: {len(s.polls)} ({len(busy)} issued commands); per poll cycle max "
        f"{max(per_poll)}, mean {statistics.fmean(per_poll):.2f} "
        f"(target <= {TARGET_COMMANDS_PER_POLL}: "
        f"{_met(max(per_poll) <= TARGET_COMMANDS_PER_POLL)})"
    )
    channels = [p.exec_channels + p.sftp_sessions for p in s.polls] or [0]
    print(
        f"  remote operations per poll incl. SFTP: max {max(channels)}, mean "
        f"{statistics.fmean(channels):.2f}; exec commands {s.exec_channels_total}, "
        f"SFTP reads {s.sftp_reads}, SFTP writes {s.sftp_writes}, status files read "
        f"{sum(p.files_read for p in s.polls)}"
    )
    if s.polls:
        seconds = [p.seconds for p in s.polls]
        local = [max(0.0, p.seconds - p.remote_seconds) for p in s.polls]
        worst = max(s.polls, key=lambda p: p.seconds)
        print(
            f"  poll duration mean {statistics.fmean(seconds):.3f} s, max {max(seconds):.3f} s; "
            f"of which local (DB + parsing, blocks the loop) mean {statistics.fmean(local):.3f}"
            f" s, max {max(local):.3f} s"
        )
        if len(s.polls) > 1:
            gaps = [b.started - a.started for a, b in zip(s.polls, s.polls[1:], strict=False)]
            print(
                f"  poll period (start to start) mean {statistics.fmean(gaps):.2f} s, "
                f"max {max(gaps):.2f} s (poll_interval {POLL_INTERVAL:g} s)"
            )
        print(
            f"  slowest poll: {worst.seconds:.2f} s, {worst.files_read} status files, "
            f"{worst.remote_seconds:.2f} s waiting on SSH"
        )
    if s.cycles:
        seconds = [c.seconds for c in s.cycles]
        print(
            f"  engine cycles: {len(s.cycles)}, duration mean {statistics.fmean(seconds):.3f} s,"
            f" max {max(seconds):.3f} s, total {sum(seconds):.1f} s"
        )
    if s.profile_text:
        print()
        print("== cProfile of engine cycles (server thread) ==")
        print(s.profile_text)


# ---------------------------------------------------------------------------------------------
# Main


async def _remote(sshd: lab.SSHServer, command: str) -> str:
    async with asyncssh.connect(**sshd.connect_kwargs()) as conn:
        result = await conn.run(command, check=False)
        return str(result.stdout).strip() or str(result.stderr).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks (default 1000)")
    parser.add_argument("--skip-raw", action="store_true", help="skip the raw sbatch baseline")
    parser.add_argument("--profile", action="store_true", help="cProfile the engine's cycles")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per phase")
    parser.add_argument("--verbose", action="store_true", help="show the service's INFO logs")
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    timeout = args.timeout or max(600.0, 1.5 * args.tasks)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _on_sigterm)

    run_id = uuid.uuid4().hex[:8]
    remote_dir = f"/home/{lab.LAB_USER}/airavata-bench/{run_id}"
    lab_dir: Path | None = None
    slurm: lab.SlurmCluster | None = None
    sshd: lab.SSHServer | None = None
    db_dir = Path(tempfile.mkdtemp(prefix="airavata-bench-db-"))
    raw: RawResult | None = None
    service: ServiceResult | None = None
    try:
        began = time.monotonic()
        lab.install()
        lab_dir = lab.make_lab_dir(prefix="airavata-bench-")
        slurm = lab.SlurmCluster(lab_dir, min_job_age=MIN_JOB_AGE)
        sshd = lab.SSHServer(lab_dir, set_env=slurm.env)
        slurm.start()
        sshd.start()
        version = asyncio.run(_remote(sshd, "sbatch --version"))
        print(
            f"lab {lab_dir} up in {time.monotonic() - began:.1f} s: {version}, node "
            f"{slurm.node} with {slurm.cpus} CPUs, partition {slurm.partition}, "
            f"MinJobAge={slurm.min_job_age}; sshd {sshd.host}:{sshd.port}"
        )
        print(f"machine: {os.cpu_count()} CPUs, load average {_load()} (before)")

        # The first jobs of a fresh slurmctld/slurmd start slower; neither measurement pays.
        warm = asyncio.run(
            run_raw(sshd, slurm.partition, WARM_UP_TASKS, remote_dir, timeout, "warm-up")
        )
        print(f"warm-up: {WARM_UP_TASKS}-element array in {warm.makespan:.2f} s (not counted)")
        if not args.skip_raw:
            print(f"raw: sbatch --array=0-{args.tasks - 1} of `true` ...", flush=True)
            raw = asyncio.run(run_raw(sshd, slurm.partition, args.tasks, remote_dir, timeout))
            print(f"raw: {raw.makespan:.2f} s", flush=True)
        print(f"service: experiment of {args.tasks} parameter sets ...", flush=True)
        service = run_service(
            sshd, slurm.partition, args.tasks, remote_dir, db_dir, timeout, args.profile
        )
        print(f"service: {service.makespan:.2f} s", flush=True)
        print(f"machine: load average {_load()} (after)")
        report(raw, service, args.tasks)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({str(exc) or 'Ctrl-C'}); stopping the lab", file=sys.stderr)
        report(raw, service, args.tasks)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if sshd is not None and sshd.pid:
            try:
                parent = shlex.quote(posixpath.dirname(remote_dir))
                cleanup = f"rm -rf {shlex.quote(remote_dir)}; rmdir {parent} 2>/dev/null"
                asyncio.run(_remote(sshd, cleanup))
            except (OSError, asyncssh.Error) as exc:
                print(f"could not remove {remote_dir}: {exc}", file=sys.stderr)
        for daemon in (sshd, slurm):
            if daemon is not None:
                try:
                    daemon.stop()
                except (lab.LabError, OSError) as exc:
                    print(f"stopping {daemon!r}: {exc}", file=sys.stderr)
        if lab_dir is not None:
            shutil.rmtree(lab_dir, ignore_errors=True)
        shutil.rmtree(db_dir, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
