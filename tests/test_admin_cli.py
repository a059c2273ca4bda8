"""The administrator's command: cluster checks against the real lab, and configuration
errors that stop the server with a message naming the file and the field."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from airavata_hpc.admin_cli import main


def write_cluster(config_dir, name, text):
    clusters = config_dir / "clusters.d"
    clusters.mkdir(parents=True, exist_ok=True)
    (clusters / f"{name}.yaml").write_text(text)


def remote_yaml(name, kind, sshd, queue, extra=""):
    return (
        f"name: {name}\ntype: {kind}\nhost: {sshd.host}\nport: {sshd.port}\n"
        f"user: {sshd.user}\nkey_file: {sshd.key_file}\nknown_hosts: {sshd.known_hosts}\n"
        f"work_dir: /home/hpcuser/airavata-check\nqueue: {queue}\n{extra}"
    )


def test_clusters_check_prints_one_row_per_real_cluster(
    tmp_path, sshd, slurm, gridengine, torque_sshd
):
    write_cluster(tmp_path, "a-slurm", remote_yaml("hpc-slurm", "slurm", sshd, slurm.partition))
    write_cluster(tmp_path, "b-sge", remote_yaml("hpc-sge", "sge", sshd, gridengine.queue))
    write_cluster(
        tmp_path, "c-pbs", remote_yaml("hpc-pbs", "pbs", torque_sshd, "debug", "flavor: torque\n")
    )
    write_cluster(tmp_path, "d-local", f"name: here\ntype: local\nwork_dir: {tmp_path}/w\n")

    result = CliRunner().invoke(main, ["clusters", "check", "--config", str(tmp_path)])

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert set(rows) == {"hpc-slurm", "hpc-sge", "hpc-pbs", "here"}
    assert "22.05" in rows["hpc-slurm"] and "debug ok" in rows["hpc-slurm"]
    for row in rows.values():
        assert row.rstrip().endswith("ok") and "writable" in row


def test_clusters_check_reports_a_missing_queue_and_an_unknown_host_key(tmp_path, sshd, slurm):
    write_cluster(tmp_path, "a", remote_yaml("noqueue", "slurm", sshd, "nosuchpartition"))
    wrong_hosts = tmp_path / "wrong_known_hosts"
    wrong_hosts.write_text(
        f"[{sshd.host}]:{sshd.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIJ2sQ1nvV3pEo3vDWC1nH3o4kN4sJ5bZqJ1Jwz3lq8m9\n"
    )
    write_cluster(
        tmp_path,
        "b",
        remote_yaml("badkey", "slurm", sshd, slurm.partition).replace(
            str(sshd.known_hosts), str(wrong_hosts)
        ),
    )

    result = CliRunner().invoke(main, ["clusters", "check", "--config", str(tmp_path)])

    assert result.exit_code == 1
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "nosuchpartition MISSING" in rows["noqueue"] and "FAIL" in rows["noqueue"]
    assert "FAIL" in rows["badkey"] and "host key" in rows["badkey"].lower()


def test_an_invalid_cluster_file_stops_the_server_naming_file_and_field(tmp_path):
    write_cluster(
        tmp_path,
        "broken",
        "name: x\ntype: slurm\nhost: h\nuser: u\nwork_dir: /w\nmax_array_size: lots\n",
    )

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "airavata_hpc.admin_cli",
            "serve",
            "--port",
            "0",
            "--database",
            f"sqlite:///{tmp_path / 'db.sqlite'}",
            "--config",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "broken.yaml" in result.stderr and "max_array_size" in result.stderr


def test_an_unknown_cluster_type_lists_the_known_ones(tmp_path):
    write_cluster(tmp_path, "odd", "name: x\ntype: lsf\nwork_dir: /w\n")
    result = CliRunner().invoke(main, ["clusters", "check", "--config", str(tmp_path)])
    assert result.exit_code != 0
    for known in ("local", "pbs", "sge", "slurm"):
        assert known in result.output
