"""The adapters' parsers on real captured output, their state maps, argv and rendered scripts.

Captured files come from ``tests/data/captured`` (see its README: Slurm 22.05.8, SGE 8.1.9 and
the torque wrappers, recorded by the lab); PBS Pro output is in ``pbspro/`` with its sources.
The local adapter's ``ps`` output is produced live by starting a real job.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from airavata_hpc.adapters import (
    AdapterError,
    BatchJob,
    JobElement,
    UnknownAdapterError,
    adapter_names,
    get_adapter,
)
from airavata_hpc.adapters.local import MARKER
from airavata_hpc.adapters.pbs import PBSAdapter
from airavata_hpc.adapters.sge import SGEAdapter
from airavata_hpc.adapters.slurm import STATE_MAP as SLURM_STATES
from airavata_hpc.states import TaskStatus

CAPTURED = Path(__file__).parent / "data" / "captured"
PBSPRO = CAPTURED / "pbspro"

T = TaskStatus


def captured(name: str) -> str:
    return (CAPTURED / name).read_text()


def job(n: int = 3, **kwargs) -> BatchJob:
    elements = tuple(JobElement(i, f"/scratch/ah-1/t{i}", f"echo {i}") for i in range(n))
    return BatchJob(
        name="ah-1", work_dir="/scratch/ah-1", elements=elements, walltime_seconds=600, **kwargs
    )


# ---------------------------------------------------------------------------- registry


def test_registry_knows_every_adapter_and_names_them_when_asked_for_another():
    assert adapter_names() == ["local", "pbs", "sge", "slurm"]
    for name in adapter_names():
        assert get_adapter(name).type_name == name
    with pytest.raises(UnknownAdapterError) as info:
        get_adapter("lsf")
    assert "'lsf'" in str(info.value)
    assert "local, pbs, sge, slurm" in str(info.value)


def test_adapter_options_are_checked():
    assert get_adapter("pbs", flavor="torque").flavor == "torque"
    with pytest.raises(ValueError, match="pbspro, torque"):
        get_adapter("pbs", flavor="openlava")
    assert get_adapter("sge", parallel_environment="mpi").parallel_environment == "mpi"


# ---------------------------------------------------------------------------- Slurm


def test_slurm_submit_output():
    slurm = get_adapter("slurm")
    assert slurm.parse_submit_output(captured("slurm-sbatch-parsable.txt")) == "1"
    assert slurm.parse_submit_output(captured("slurm-sbatch-parsable-array.txt")) == "2"
    assert slurm.parse_submit_output("77;othercluster\n") == "77"
    with pytest.raises(AdapterError, match="no job id"):
        slurm.parse_submit_output("sbatch: error: Batch job submission failed\n")


def test_slurm_status_from_captured_squeue():
    found = get_adapter("slurm").parse_status_output(captured("slurm-squeue-format.txt"))
    expect = {
        "1": (T.COMPLETED, "COMPLETED", None),
        "2_0": (T.COMPLETED, "COMPLETED", None),
        "2_1": (T.FAILED, "FAILED", "NonZeroExitCode"),
        "3": (T.FAILED, "FAILED", "NonZeroExitCode"),
        "4": (T.FAILED, "FAILED", "JobLaunchFailure"),
        "5": (T.FAILED, "TIMEOUT", "TimeLimit"),
        "6": (T.CANCELLED, "CANCELLED", None),
        "7": (T.RUNNING, "RUNNING", None),
        "8": (T.QUEUED, "PENDING", "JobHeldUser"),
        "9": (T.QUEUED, "PENDING", "Dependency"),
        "10_0": (T.RUNNING, "RUNNING", None),
        "10_1": (T.RUNNING, "RUNNING", None),
    }
    for job_id, (status, native, reason) in expect.items():
        got = found[job_id]
        assert (got.job_id, got.status, got.native_state, got.reason) == (
            job_id,
            status,
            native,
            reason,
        )
        assert got.exit_code is None
    # The grouped pending line "10_[2-5%2]" is expanded to one entry per element.
    for index in range(2, 6):
        assert found[f"10_{index}"].status is T.QUEUED
        assert found[f"10_{index}"].reason == "JobArrayTaskLimit"
    assert "999" not in found  # absent, never "finished"


def test_slurm_format_output_agrees_with_squeue_json_of_the_same_jobs():
    """The --format states are the ones squeue --json reports for the same (plain) jobs."""
    found = get_adapter("slurm").parse_status_output(captured("slurm-squeue-format.txt"))
    jobs = json.loads(captured("slurm-squeue-json.json"))["jobs"]
    plain = [j for j in jobs if not j.get("array_job_id")]
    assert len(plain) >= 8
    for record in plain:
        assert found[str(record["job_id"])].native_state == record["job_state"]


def test_slurm_state_map_covers_every_documented_state():
    # squeue(1) of Slurm 22.05, "JOB STATE CODES".
    documented = {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "CONFIGURING",
        "COMPLETING",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PENDING",
        "PREEMPTED",
        "RUNNING",
        "RESV_DEL_HOLD",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "REQUEUED",
        "RESIZING",
        "REVOKED",
        "SIGNALING",
        "SPECIAL_EXIT",
        "STAGE_OUT",
        "STOPPED",
        "SUSPENDED",
        "TIMEOUT",
    }
    assert documented == set(SLURM_STATES)
    final = {state for state, status in SLURM_STATES.items() if status.is_final}
    assert final == {
        "COMPLETED",
        "CANCELLED",
        "REVOKED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "BOOT_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "DEADLINE",
        "SPECIAL_EXIT",
    }


def test_slurm_unknown_state_is_not_final_and_bad_lines_are_errors(caplog):
    slurm = get_adapter("slurm")
    found = slurm.parse_status_output("12|NEW_STATE_IN_24|None\n")
    assert found["12"].status is T.RUNNING
    assert "unknown native state" in caplog.text
    with pytest.raises(AdapterError, match="not %i"):
        slurm.parse_status_output("garbage without separators\n")


def test_slurm_argv():
    slurm = get_adapter("slurm")
    assert slurm.submit_command("/s/ah-1.sh") == ["sbatch", "--parsable", "/s/ah-1.sh"]
    assert slurm.status_command(["1", "2_0"]) == [
        "squeue",
        "--me",
        "--noheader",
        "--array",
        "--states=all",
        "--format=%i|%T|%r",
    ]
    assert slurm.cancel_command(["5", "6_1"]) == ["scancel", "5", "6_1"]
    assert slurm.element_job_ids("40", job(3)) == {0: "40_0", 1: "40_1", 2: "40_2"}
    assert slurm.element_job_ids("41", job(1)) == {0: "41"}
    assert slurm.find_jobs_by_name_command("ah-1")[-2:] == ["--name=ah-1", "--format=%F|%j"]
    assert slurm.parse_find_jobs_output("40|ah-1\n40|ah-1\n41|other\n", "ah-1") == ["40"]
    assert slurm.version_command() == ["sbatch", "--version"]
    assert slurm.parse_version_output(captured("slurm-sinfo-V.txt")) == "slurm-wlm 22.05.8"
    assert slurm.queue_check_command("debug")[0] == "sinfo"
    assert slurm.queue_exists(0, captured("slurm-sinfo-p-debug.txt"))
    assert not slurm.queue_exists(0, "")


# ---------------------------------------------------------------------------- SGE


def test_sge_submit_output():
    sge = get_adapter("sge")
    assert sge.parse_submit_output(captured("sge-qsub-terse.txt")) == "1"
    assert sge.parse_submit_output(captured("sge-qsub-terse-array.txt")) == "2"
    with pytest.raises(AdapterError):
        sge.parse_submit_output("Unable to run job: denied\n")


def test_sge_status_from_captured_qstat_xml():
    found = get_adapter("sge").parse_status_output(captured("sge-qstat-xml.xml"))
    assert found["4"].status is T.RUNNING and found["4"].native_state == "r"
    assert found["5"].status is T.RUNNING
    assert found["6"].status is T.QUEUED and found["6"].reason == "held"
    assert found["7"].status is T.QUEUED and found["7"].reason is None
    # Array 8 with -tc 2: tasks 1 and 2 run, "3,4" pending on one line.
    assert [found[f"8.{task}"].status for task in (1, 2, 3, 4)] == [
        T.RUNNING,
        T.RUNNING,
        T.QUEUED,
        T.QUEUED,
    ]
    assert "8" not in found  # an array is reported per task only
    assert all(status.exit_code is None for status in found.values())
    # Jobs 1-3 had finished: Grid Engine forgets them, so they are absent.
    assert {"1", "2", "3"}.isdisjoint(found)
    assert get_adapter("sge").parse_status_output(captured("sge-qstat-xml-empty.xml")) == {}


def test_sge_state_letters_combine_by_priority():
    sge = get_adapter("sge")

    def status(state: str) -> TaskStatus:
        xml = (
            "<job_info><job_info><job_list><JB_job_number>9</JB_job_number>"
            f"<JB_name>x</JB_name><state>{state}</state></job_list></job_info></job_info>"
        )
        return sge.parse_status_output(xml)["9"].status

    assert status("Eqw") is T.FAILED
    assert status("hqw") is T.QUEUED
    assert status("dr") is T.RUNNING  # qdel requested, still running until killed
    assert status("d") is T.CANCELLED
    assert status("Rr") is T.RUNNING
    assert status("s") is T.RUNNING
    with pytest.raises(AdapterError, match="not XML"):
        sge.parse_status_output("<job_info>")


def test_sge_argv_and_ids():
    sge = get_adapter("sge")
    assert sge.submit_command("/s/a.sh") == ["qsub", "-terse", "/s/a.sh"]
    assert sge.status_command([]) == ["qstat", "-xml", "-g", "d", "-u", "$user"]
    assert sge.element_job_ids("8", job(3)) == {0: "8.1", 1: "8.2", 2: "8.3"}
    assert sge.element_job_ids("9", job(1)) == {0: "9"}
    assert sge.cancel_command(["8.2", "9"]) == ["qdel", "8.2", "9"]
    xml = captured("sge-qstat-xml.xml")
    assert sge.parse_find_jobs_output(xml, "sleeper") == ["4"]
    assert sge.parse_find_jobs_output(xml, "sleep.sh") == ["5", "8"]
    assert sge.parse_version_output(captured("sge-qstat-help.txt")) == "SGE 8.1.9"
    assert sge.queue_check_command("all.q") == ["qconf", "-sq", "all.q"]


# ---------------------------------------------------------------------------- Torque wrappers


def test_torque_wrapper_output():
    torque = get_adapter("pbs", flavor="torque")
    assert torque.parse_submit_output(captured("torque-qsub.txt")) == "16"
    running = torque.parse_status_output(captured("torque-qstat-f-running.txt"))
    assert running["16"].status is T.RUNNING and running["16"].native_state == "R"
    for name, job_id in (("completed", "17"), ("deleted", "18")):
        found = torque.parse_status_output(captured(f"torque-qstat-f-{name}.txt"))
        # The wrappers say C for both, without exit status: advisory COMPLETED.
        assert found[job_id].status is T.COMPLETED
        assert found[job_id].exit_code is None
        assert "status file decides" in found[job_id].reason
    all_jobs = "".join(captured(f"torque-qstat-f-{n}.txt") for n in ("running", "completed"))
    assert torque.parse_find_jobs_output(all_jobs, "pbsquick") == ["17"]
    assert torque.status_output_usable(153, "")  # nothing matched: everything absent
    assert not torque.status_output_usable(1, "qstat: cannot connect to server\n")


def test_torque_argv():
    torque = get_adapter("pbs", flavor="torque")
    assert torque.submit_command("/s/w/a.sh") == [
        "qsub",
        "-o",
        "/s/w/pbs.out",
        "-e",
        "/s/w/pbs.err",
        "/s/w/a.sh",
    ]
    status = torque.status_command(["16", "16", "17"])
    assert status[:2] == ["sh", "-c"] and status[3:] == ["airavata-hpc-status", "16", "17"]
    assert 'exec qstat -f "$@"' in status[2] and "--format=%i|%T|%r" in status[2]
    assert torque.element_job_ids("16", job(2)) == {0: "16[0]", 1: "16[1]"}
    assert torque.find_jobs_by_name_command("x")[3:] == ["airavata-hpc-find", "x"]


def test_torque_wrappers_answer_through_squeue_with_pbs_style_ids():
    """Where qstat is Slurm's wrapper, squeue answers; 2_1 becomes 2[1], 10_[2-5%2] four ids."""
    torque = get_adapter("pbs", flavor="torque")
    found = torque.parse_status_output(captured("slurm-squeue-format.txt"))
    assert found["2[0]"].status is T.COMPLETED
    assert found["2[1]"].status is T.FAILED and found["2[1]"].reason == "NonZeroExitCode"
    assert [found[f"10[{i}]"].status for i in range(6)] == [T.RUNNING] * 2 + [T.QUEUED] * 4
    assert found["16"].status is T.RUNNING and found["16"].native_state == "RUNNING"
    assert "2_1" not in found
    assert torque.parse_find_jobs_output("40|ah-1\n40|ah-1\n", "ah-1") == ["40"]


# ---------------------------------------------------------------------------- PBS Pro


def test_pbspro_status_from_json():
    pbs = get_adapter("pbs")
    found = pbs.parse_status_output((PBSPRO / "qstat-f-F-json-x-t.json").read_text())
    summary = {job_id: (s.status, s.native_state, s.exit_code) for job_id, s in found.items()}
    assert summary == {
        "1001.pbs01": (T.COMPLETED, "F", 0),
        "1002.pbs01": (T.FAILED, "F", 7),
        "1003.pbs01": (T.RUNNING, "R", None),
        "1004.pbs01": (T.QUEUED, "Q", None),
        "1005[].pbs01": (T.RUNNING, "B", None),
        "1005[0].pbs01": (T.COMPLETED, "X", 0),
        "1005[1].pbs01": (T.RUNNING, "R", None),
        "1005[2].pbs01": (T.QUEUED, "Q", None),
        "1006.pbs01": (T.FAILED, "F", 271),
        "1007.pbs01": (T.CANCELLED, "F", None),
        "1008.pbs01": (T.QUEUED, "H", None),
    }
    assert found["1004.pbs01"].reason.startswith("Not Running: Insufficient amount")
    assert found["1006.pbs01"].reason == "killed by signal 15"
    empty = pbs.parse_status_output((PBSPRO / "qstat-f-F-json-no-jobs.json").read_text())
    assert empty == {}
    with pytest.raises(AdapterError, match="not JSON"):
        pbs.parse_status_output("{")


def test_pbspro_ids_and_argv():
    pbs = get_adapter("pbs")
    array_id = pbs.parse_submit_output((PBSPRO / "qsub-array.txt").read_text())
    assert array_id == "1005[].pbs01"
    assert pbs.parse_submit_output((PBSPRO / "qsub.txt").read_text()) == "1003.pbs01"
    ids = pbs.element_job_ids(array_id, job(3))
    assert ids == {0: "1005[0].pbs01", 1: "1005[1].pbs01", 2: "1005[2].pbs01"}
    # Subjobs collapse to their parent; -t expands them again.
    assert pbs.status_command([*ids.values(), "1003.pbs01"]) == [
        "qstat",
        "-f",
        "-F",
        "json",
        "-x",
        "-t",
        "1005[].pbs01",
        "1003.pbs01",
    ]
    with pytest.raises(ValueError, match="every job"):
        pbs.status_command([])
    assert pbs.status_output_usable(0, "")
    assert pbs.status_output_usable(153, (PBSPRO / "qstat-unknown.stderr").read_text())
    assert not pbs.status_output_usable(2, "qstat: illegal -F value\n")
    assert pbs.cancel_command(["1005[].pbs01"]) == ["qdel", "1005[].pbs01"]
    assert pbs.find_jobs_by_name_command("ah-sweep") == ["qselect", "-x", "-N", "ah-sweep"]
    selected = (PBSPRO / "qselect-x-N.txt").read_text()
    assert pbs.parse_find_jobs_output(selected + "1005[1].pbs01\n", "ah-sweep") == ["1005[].pbs01"]
    assert pbs.parse_version_output((PBSPRO / "qstat-version.txt").read_text()) == (
        "pbs_version = 2022.1.3"
    )


def test_pbs_state_map_covers_both_flavors():
    pbs = get_adapter("pbs")
    assert set("BEFHMQRSTUWX") <= set(pbs.STATE_MAP)  # OpenPBS job_state letters
    assert set("CEHQRTWS") <= set(pbs.STATE_MAP)  # Torque


# ---------------------------------------------------------------------------- local


def test_local_parses_real_ps_output(tmp_path):
    local = get_adapter("local")
    script = tmp_path / "ah-ps.sh"
    script.write_text("sleep 30 & wait\n")
    out = subprocess.run(
        local.submit_command(str(script)), capture_output=True, text=True, check=True
    )
    pid = local.parse_submit_output(out.stdout)
    try:
        deadline = time.monotonic() + 10
        while True:
            ps = subprocess.run(local.status_command([pid]), capture_output=True, text=True)
            found = local.parse_status_output(ps.stdout)
            if pid in found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert found[pid].status is T.RUNNING
        assert list(found) == [pid]  # neither the subshell nor unrelated processes
        assert local.parse_find_jobs_output(ps.stdout, "ah-ps") == [pid]
        assert local.parse_find_jobs_output(ps.stdout, "ah-other") == []
    finally:
        subprocess.run(local.cancel_command([pid]), check=False)
    deadline = time.monotonic() + 10
    while pid in local.parse_status_output(
        subprocess.run(local.status_command([pid]), capture_output=True, text=True).stdout
    ):
        assert time.monotonic() < deadline, "cancelled job still listed"
        time.sleep(0.05)


def test_local_ignores_strangers_and_zombies():
    local = get_adapter("local")
    ps = (
        f"  10    10 Ss   bash /w/ah-a.sh {MARKER}\n"
        f"  11    10 S    bash /w/ah-a.sh {MARKER}\n"  # the job's subshell
        f"  12    12 Z    [bash] <defunct> {MARKER}\n"
        "  13    13 S    bash /w/ah-b.sh\n"  # no marker: not ours
    )
    assert list(local.parse_status_output(ps)) == ["10"]
    assert local.cancel_command(["10", "20"]) == ["kill", "-TERM", "--", "-10", "-20"]
    assert local.element_job_ids("10", job(3)) == {0: "10", 1: "10", 2: "10"}
    assert local.queue_exists(0, "")
    with pytest.raises(AdapterError):
        local.parse_submit_output("sh: setsid: not found\n")


# ---------------------------------------------------------------------------- scripts


@pytest.mark.parametrize(
    ("adapter", "expected"),
    [
        (
            get_adapter("slurm"),
            [
                "#SBATCH --job-name=ah-1",
                "#SBATCH --array=0-2%2",
                "#SBATCH --time=0-00:10:00",
                "#SBATCH --partition=debug",
                "#SBATCH --mem=2048M",
                "#SBATCH --cpus-per-task=2",
            ],
        ),
        (
            SGEAdapter(),
            [
                "#$ -N ah-1",
                "#$ -t 1-3",
                "#$ -tc 2",
                "#$ -l h_rt=00:10:00",
                "#$ -q debug",
                "#$ -pe smp 2",
                "#$ -l h_vmem=1024M",
                "$((SGE_TASK_ID - 1))",
            ],
        ),
        (
            PBSAdapter("pbspro"),
            [
                "#PBS -N ah-1",
                "#PBS -J 0-2%2",
                "#PBS -l select=1:ncpus=2:mem=2048mb",
                "#PBS -o /scratch/ah-1/pbs.^array_index^.out",
            ],
        ),
        (PBSAdapter("torque"), ["#PBS -t 0-2%2", "#PBS -l nodes=1:ppn=2", "#PBS -l mem=2048mb"]),
        (get_adapter("local", cores=4), ["timeout --kill-after=10 600", "-ge 2 ]"]),
    ],
    ids=["slurm", "sge", "pbspro", "torque", "local"],
)
def test_rendered_scripts_have_directives_and_parse_in_bash(adapter, expected, tmp_path):
    batch = job(
        3,
        cores=2,
        memory_mb=2048,
        partition="debug",
        throttle=2,
        environment_setup=("module load python/3.11",),
    )
    script = adapter.render_script(batch)
    assert script.startswith("#!/bin/bash\n")
    for line in expected:
        assert line in script, line
    assert "\nmodule load python/3.11\n" in script
    for element in batch.elements:
        assert f"{element.index}) __ah_run_element {element.index} {element.task_dir} " in script
    path = tmp_path / "job.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_plain_job_has_no_array_directive():
    script = get_adapter("slurm").render_script(job(1))
    assert "#SBATCH --array" not in script
    assert "slurm-%j.out" in script
