"""Capture real Slurm, Grid Engine and torque-wrapper output for the adapters' parser tests.

Run as root on the lab machine (about 2 minutes: Slurm enforces time limits only every ~30 s):

    /work/venv/bin/python tests/data/captured/capture.py [OUTPUT_DIR]

It starts a fresh lab (``tests/lab.py``), submits a mix of jobs as ``hpcuser``, writes each
command's stdout to a file named for the command and case, and rewrites ``README.md`` with one
line per file: the command line, its exit status, and the versions and date. Job ids in the
files are the ones this run got; README.md names the job behind each case.
"""

from __future__ import annotations

import datetime
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/

import lab  # noqa: E402

USER = lab.LAB_USER


class Capture:
    """Runs commands as hpcuser against the lab and records their output."""

    def __init__(self, out_dir: Path, workdir: Path) -> None:
        self.out_dir = out_dir
        self.workdir = workdir
        self.rows: list[tuple[str, str, int, str]] = []

    def sh(self, command: str, env: dict[str, str], check: bool = True) -> str:
        """Run a shell command as hpcuser in the work directory; return stdout."""
        proc = lab.run(
            ["bash", "-c", command], env=env, user=USER, cwd=self.workdir, check=check, timeout=60
        )
        return proc.stdout

    def save(self, name: str, command: str, env: dict[str, str], note: str = "") -> str:
        """Run ``command`` and store its stdout (and stderr, if any) as ``name``."""
        proc = lab.run(
            ["bash", "-c", command], env=env, user=USER, cwd=self.workdir, check=False, timeout=60
        )
        (self.out_dir / name).write_text(proc.stdout)
        if proc.stderr.strip():
            (self.out_dir / f"{name}.stderr").write_text(proc.stderr)
            note = f"{note}; stderr in {name}.stderr".lstrip("; ")
        self.rows.append((name, command, proc.returncode, note))
        return proc.stdout


def until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``check`` every 0.3 s until true, within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.3)


def slurm_state(cap: Capture, env: dict[str, str], job: str) -> str:
    """The JobState of a Slurm job (first line for arrays)."""
    line = cap.sh(f"scontrol show job -o {job}", env, check=False)
    match = re.search(r"JobState=(\S+)", line)
    return match.group(1) if match else ""


def script(cap: Capture, name: str, body: str) -> str:
    """Write a job script into the work directory (owned by hpcuser)."""
    cap.sh(f"cat > {name} << 'EOF'\n#!/bin/bash\n{body}\nEOF\n", {})
    return name


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    out_dir.mkdir(parents=True, exist_ok=True)
    lab.install()
    lab_dir = lab.make_lab_dir(prefix="airavata-capture-")
    slurm = lab.SlurmCluster(lab_dir)
    sge = lab.GridEngine(lab_dir)
    torque = lab.TorqueWrappers()
    workdir = Path(
        lab.run(["mktemp", "-d", "-p", "/home/hpcuser", "capture-XXXXXX"], user=USER).stdout.strip()
    )
    cap = Capture(out_dir, workdir)
    se = slurm.env
    ge = sge.env
    te = {**slurm.env, "PATH": torque.path}
    cases: list[str] = []
    ok = False
    try:
        slurm.start()
        sge.start()
        torque.start()
        versions = {
            "slurm": cap.sh("sinfo -V", se).strip(),
            "sge": cap.sh("qstat -help | head -1", ge).strip(),
        }

        # ---------------------------------------------------------------- Slurm
        def sbatch(args: str) -> str:
            return cap.sh(f"sbatch --parsable {args}", se).strip()

        completed = cap.save(
            "slurm-sbatch-parsable.txt", "sbatch --parsable --wrap 'true'", se
        ).strip()
        array = cap.save(
            "slurm-sbatch-parsable-array.txt",
            "sbatch --parsable --array=0-3 --wrap 'exit $((SLURM_ARRAY_TASK_ID % 2))'",
            se,
        ).strip()
        failed = sbatch("--wrap 'exit 7'")
        killed = sbatch("--wrap 'kill -KILL $$'")
        timeout = sbatch("--time=1 --wrap 'sleep 600'")
        cancelled = sbatch("--wrap 'sleep 600'")
        running = sbatch("--wrap 'sleep 600'")
        held = sbatch("-H --wrap 'true'")
        dependent = sbatch(f"--dependency=afterok:{running} --wrap 'true'")
        throttled = sbatch("--array=0-5%2 --wrap 'sleep 600'")
        cases.append(
            f"Slurm jobs: {completed} completed; {array} array 0-3 (even elements exit 0, odd "
            f"exit 1); {failed} exit 7; {killed} killed by SIGKILL; {timeout} timeout "
            f"(--time=1); {cancelled} cancelled while running; {running} running; {held} "
            f"held (-H); {dependent} pending on afterok:{running}; {throttled} array 0-5%2 "
            "of sleeps (2 running, 4 pending)."
        )
        until(lambda: slurm_state(cap, se, cancelled) == "RUNNING", 30, "job to run")
        cap.save("slurm-scancel.txt", f"scancel {cancelled}", se)

        # ---------------------------------------------------------------- Grid Engine
        script(cap, "exit0.sh", "echo ok")
        script(cap, "exit7.sh", "exit 7")
        script(cap, "array.sh", "exit $((SGE_TASK_ID % 2))")
        script(cap, "sleep.sh", "sleep 600")

        def qsub(args: str) -> str:
            return cap.sh(f"qsub -terse -cwd {args}", ge).strip()

        g_ok = cap.save("sge-qsub-terse.txt", "qsub -terse -cwd exit0.sh", ge).strip()
        g_array = (
            cap.save("sge-qsub-terse-array.txt", "qsub -terse -cwd -t 1-4 array.sh", ge)
            .strip()
            .split(".")[0]
        )
        g_fail = qsub("exit7.sh")
        g_run = qsub("-N sleeper sleep.sh")
        g_deleted = qsub("sleep.sh")
        g_held = qsub("-h exit0.sh")
        later = datetime.datetime.now() + datetime.timedelta(hours=1)
        g_later = qsub(f"-a {later:%Y%m%d%H%M} exit0.sh")
        g_tc = qsub("-t 1-4 -tc 2 sleep.sh").split(".")[0]
        cases.append(
            f"SGE jobs: {g_ok} exit 0; {g_array} array 1-4 (odd tasks exit 1); {g_fail} exit "
            f"7; {g_run} running sleep named 'sleeper'; {g_deleted} deleted while running "
            f"(qdel); {g_held} held (-h); {g_later} pending with a start time (-a); {g_tc} "
            "array 1-4 -tc 2 of sleeps."
        )

        def sge_running(job: str) -> bool:
            return bool(re.search(rf"^\s*{job}\s.*\sr\s", cap.sh("qstat -u hpcuser", ge), re.M))

        until(
            lambda: sge_running(g_run) and sge_running(g_deleted) and sge_running(g_tc),
            30,
            "SGE jobs to run",
        )

        def accounted(job: str, records: int = 1) -> bool:
            out = cap.sh(f"qacct -j {job}", ge, check=False)
            return out.count("exit_status") >= records

        until(
            lambda: accounted(g_ok) and accounted(g_fail) and accounted(g_array, 4),
            30,
            "SGE jobs to finish",
        )
        cap.save(
            "sge-qstat-xml.xml",
            "qstat -xml -u hpcuser",
            ge,
            "running, held, future-start and throttled array jobs",
        )
        cap.save("sge-qstat.txt", "qstat -u hpcuser", ge)
        cap.save("sge-qstat-j-running.txt", f"qstat -j {g_run}", ge)
        cap.save("sge-qstat-j-array.txt", f"qstat -j {g_tc}", ge)
        cap.save("sge-qstat-j-unknown.txt", "qstat -j 999999", ge)
        cap.save("sge-qdel.txt", f"qdel {g_deleted}", ge)
        until(lambda: accounted(g_deleted), 30, "the deleted SGE job's record")
        cap.save("sge-qacct-exit0.txt", f"qacct -j {g_ok}", ge)
        cap.save("sge-qacct-exit7.txt", f"qacct -j {g_fail}", ge)
        cap.save("sge-qacct-deleted.txt", f"qacct -j {g_deleted}", ge)
        cap.save("sge-qacct-array.txt", f"qacct -j {g_array}", ge)
        cap.save("sge-qacct-unknown.txt", "qacct -j 999999", ge)
        cap.save("sge-qstat-help.txt", "qstat -help | head -1", ge)

        # ---------------------------------------------------------------- torque wrappers
        script(cap, "pbs-sleep.pbs", "#PBS -N pbssleep\n#PBS -l walltime=00:10:00\nsleep 600")
        script(cap, "pbs-quick.pbs", "#PBS -N pbsquick\n#PBS -l walltime=00:01:00\ntrue")
        t_run = cap.save("torque-qsub.txt", "qsub pbs-sleep.pbs", te).strip()
        t_quick = cap.sh("qsub pbs-quick.pbs", te).strip()
        t_deleted = cap.sh("qsub pbs-sleep.pbs", te).strip()
        cases.append(
            f"Torque-wrapper jobs (Slurm ids): {t_run} running sleep 'pbssleep'; {t_quick} "
            f"completed 'pbsquick'; {t_deleted} deleted with qdel while running."
        )
        until(
            lambda: (
                slurm_state(cap, se, t_run) == "RUNNING"
                and slurm_state(cap, se, t_deleted) == "RUNNING"
                and slurm_state(cap, se, t_quick) == "COMPLETED"
            ),
            30,
            "torque jobs",
        )
        cap.save("torque-qdel.txt", f"qdel {t_deleted}", te)
        until(lambda: slurm_state(cap, se, t_deleted) == "CANCELLED", 30, "qdel")
        cap.save("torque-qstat.txt", "qstat", te, "all jobs of the Slurm cluster")
        cap.save("torque-qstat-f-running.txt", f"qstat -f {t_run}", te)
        cap.save("torque-qstat-f-completed.txt", f"qstat -f {t_quick}", te)
        cap.save("torque-qstat-f-deleted.txt", f"qstat -f {t_deleted}", te)

        # ---------------------------------------------------------------- Slurm, later
        until(lambda: slurm_state(cap, se, timeout) == "TIMEOUT", 240, "the Slurm timeout")
        cap.save(
            "slurm-squeue-json.json",
            "squeue --me --json -t all",
            se,
            "every job state of the Slurm list above",
        )
        cap.save("slurm-squeue-format.txt", "squeue -h -o '%i|%T|%r' --me -t all", se)
        for case, job in (
            ("completed", completed),
            ("failed", failed),
            ("sigkill", killed),
            ("cancelled", cancelled),
            ("timeout", timeout),
            ("running", running),
            ("held", held),
            ("dependency", dependent),
            ("array", array),
            ("array-throttled", throttled),
        ):
            cap.save(f"slurm-scontrol-show-job-{case}.txt", f"scontrol show job -o {job}", se)
        cap.save("slurm-scontrol-show-job-unknown.txt", "scontrol show job -o 999999", se)
        cap.save("slurm-sinfo-V.txt", "sinfo -V", se)
        cap.save(
            "slurm-sinfo-p-debug.txt",
            f"sinfo -h -p {slurm.partition}",
            se,
            "node busy with the running jobs",
        )
        cap.sh("scancel -u hpcuser", se)
        cap.sh("qdel -u hpcuser", ge, check=False)
        until(lambda: not cap.sh("qstat -u hpcuser", ge).strip(), 30, "SGE to empty")
        cap.save("sge-qstat-xml-empty.xml", "qstat -xml -u hpcuser", ge, "no jobs")
        ok = True
    finally:
        sge.stop()
        slurm.stop()
        if ok:
            lab.run(["rm", "-rf", str(workdir), str(lab_dir)], check=False)
        else:
            print(f"kept {lab_dir} and {workdir} for a look", file=sys.stderr)
    write_readme(out_dir, cap.rows, versions, cases)


def write_readme(
    out_dir: Path, rows: list[tuple[str, str, int, str]], versions: dict[str, str], cases: list[str]
) -> None:
    """Describe every captured file, one line each."""
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    lines = [
        "# Captured batch-system output",
        "",
        f"Real output captured {today} by `tests/data/captured/capture.py` as `hpcuser` from the "
        f"test lab (`tests/lab.py`) on Debian 12: {versions['slurm']}, Son of Grid Engine "
        f"`{versions['sge']}`, and Slurm's torque wrappers (slurm-wlm-torque, same version) "
        "over that Slurm. Each line: file - command line (exit status) - notes.",
        "",
        *[f"- {case}" for case in cases],
        "",
    ]
    for name, command, status, note in rows:
        lines.append(f"- `{name}` - `{command}` (exit {status})" + (f" - {note}" if note else ""))
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
