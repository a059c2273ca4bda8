"""Cluster YAML files: valid ones load, invalid ones fail with file, field and problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from airavata_hpc.clusters import (
    FIELD_NAMES,
    ClusterConfig,
    ClusterConfigError,
    default_local_cluster,
    load_clusters,
    parse_cluster,
)
from airavata_hpc.remote import LocalRunner, RunnerPool, SSHRunner

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"


def write(config_dir: Path, name: str, text: str) -> Path:
    path = config_dir / "clusters.d" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def config_dir(tmp_path) -> Path:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").write_text("not really a key\n")
    (tmp_path / "known_hosts").write_text("[h]:22 ssh-ed25519 AAAA\n")
    return tmp_path


SLURM = """\
name: bigiron
type: slurm
host: login.example.org
port: 2222
user: svc
key_file: ../keys/id
known_hosts: {known_hosts}
work_dir: /scratch/svc/ah
partition: compute
account: proj-1
max_queued_jobs: 50
max_array_size: 200
array_throttle: 10
poll_interval: 5
cost_per_core_hour: 0.02
compute_types: [cpu, gpu]
max_walltime: "1-12:00:00"
cores_per_node: 64
memory_per_node: 256G
environment_setup:
  - module load python
"""


def test_a_full_slurm_file_loads(config_dir):
    path = write(config_dir, "bigiron.yaml", SLURM.format(known_hosts=config_dir / "known_hosts"))
    [cluster] = load_clusters(config_dir)
    assert cluster == ClusterConfig(
        name="bigiron",
        type="slurm",
        host="login.example.org",
        port=2222,
        user="svc",
        key_file=str(config_dir / "keys" / "id"),
        known_hosts=str(config_dir / "known_hosts"),
        work_dir="/scratch/svc/ah",
        queue="compute",
        account="proj-1",
        max_queued_jobs=50,
        max_array_size=200,
        array_throttle=10,
        poll_interval=5.0,
        cost_per_core_hour=0.02,
        compute_types=("cpu", "gpu"),
        max_walltime=36 * 3600,
        cores_per_node=64,
        memory_per_node=256 * 1024,
        environment_setup=("module load python",),
        source=str(path),
    )
    assert cluster.partition == "compute" and cluster.is_remote
    assert cluster.adapter().type_name == "slurm"
    runner = RunnerPool().get(cluster)
    assert isinstance(runner, SSHRunner)
    assert (runner.host, runner.port, runner.username) == ("login.example.org", 2222, "svc")


def test_files_load_sorted_and_examples_are_ignored(config_dir):
    write(config_dir, "b.yaml", "name: b\ntype: local\nwork_dir: /tmp/b\n")
    write(config_dir, "a.yaml", "name: a\ntype: local\nwork_dir: /tmp/a\n")
    write(config_dir, "examples/c.yaml", "name: c\ntype: bogus\n")
    write(config_dir, "notes.txt", "not yaml at all: [")
    assert [c.name for c in load_clusters(config_dir)] == ["a", "b"]


def test_default_local_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    [cluster] = load_clusters(None)
    assert (cluster.name, cluster.type, cluster.host) == ("local", "local", None)
    assert cluster.work_dir == str(tmp_path / "data" / "airavata-hpc" / "local")
    assert cluster.cores_per_node >= 1 and cluster.user
    assert isinstance(RunnerPool().get(cluster), LocalRunner)
    assert default_local_cluster(tmp_path / "w").work_dir == str(tmp_path / "w")
    assert load_clusters(None, default_work_dir=tmp_path / "v")[0].work_dir == str(tmp_path / "v")


def test_the_shipped_local_cluster_loads(tmp_path):
    shutil.copytree(REPO_CONFIG / "clusters.d", tmp_path / "clusters.d")
    [local] = load_clusters(tmp_path)
    assert (local.name, local.type, local.host) == ("local", "local", None)
    assert local.work_dir.startswith("/") and "~" not in local.work_dir
    assert local.adapter_options() == {"cores": 2}


@pytest.mark.parametrize("example", ["slurm", "pbs", "sge"])
def test_the_shipped_examples_are_valid_once_their_files_exist(example, tmp_path):
    data = yaml.safe_load(
        (REPO_CONFIG / "clusters.d" / "examples" / f"{example}.yaml.example").read_text()
    )
    for key in ("key_file", "known_hosts", "template"):
        if key in data:
            target = tmp_path / Path(data[key]).name
            target.write_text("x\n")
            data[key] = str(target)
    cluster = parse_cluster(data, f"{example}.yaml.example")
    assert cluster.type == example and cluster.is_remote
    assert set(data) <= set(FIELD_NAMES)


def test_pbs_and_sge_options_reach_their_adapters(config_dir):
    write(
        config_dir, "p.yaml", "name: p\ntype: pbs\nflavor: torque\nhost: h\nuser: u\nwork_dir: /w\n"
    )
    write(
        config_dir,
        "s.yaml",
        "name: s\ntype: sge\nhost: h\nuser: u\nwork_dir: /w\n"
        "parallel_environment: mpi\nqueue: all.q\n",
    )
    pbs, sge = load_clusters(config_dir)
    assert pbs.adapter().flavor == "torque"
    assert sge.adapter().parallel_environment == "mpi"
    assert sge.queue == "all.q"


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (
            "name: x\ntype: local\nwork_dir: /w\npartiton: debug\n",
            "partiton",
            "unknown field; known fields: account, array_throttle",
        ),
        (
            "name: x\ntype: lsf\nwork_dir: /w\n",
            "type",
            "unknown type 'lsf'; known types: local, pbs, sge, slurm",
        ),
        ("type: local\nwork_dir: /w\n", "name", "is required"),
        ("name: x\nwork_dir: /w\n", "type", "is required"),
        ("name: x\ntype: local\n", "work_dir", "is required"),
        ("name: x\ntype: slurm\nwork_dir: /w\n", "host", "is required for type slurm"),
        ("name: x\ntype: slurm\nhost: h\nwork_dir: /w\n", "user", "is required when host"),
        (
            "name: x\ntype: slurm\nhost: h\nuser: u\nwork_dir: scratch\n",
            "work_dir",
            "must be an absolute path",
        ),
        (
            "name: x\ntype: slurm\nhost: h\nuser: u\nwork_dir: ~/ah\n",
            "work_dir",
            "'~' is not expanded on remote hosts",
        ),
        (
            "name: x\ntype: local\nwork_dir: /w\nflavor: torque\n",
            "flavor",
            "applies to type pbs only",
        ),
        (
            "name: x\ntype: pbs\nhost: h\nuser: u\nwork_dir: /w\nflavor: lsf\n",
            "flavor",
            "known flavors: pbspro, torque",
        ),
        ("name: x\ntype: local\nwork_dir: /w\nqueue: a\npartition: b\n", "partition", "not both"),
        ("name: x\ntype: local\nwork_dir: /w\nport: 70000\n", "port", "between 1 and 65535"),
        (
            "name: x\ntype: local\nwork_dir: /w\nmax_array_size: 0\n",
            "max_array_size",
            "must be >= 1",
        ),
        (
            "name: x\ntype: local\nwork_dir: /w\npoll_interval: fast\n",
            "poll_interval",
            "must be a number",
        ),
        (
            "name: x\ntype: local\nwork_dir: /w\nmax_walltime: 2 days\n",
            "max_walltime",
            "[D-]HH:MM:SS",
        ),
        (
            "name: x\ntype: local\nwork_dir: /w\nmemory_per_node: lots\n",
            "memory_per_node",
            "size with a unit",
        ),
        (
            "name: x\ntype: local\nwork_dir: /w\ncompute_types: gpu\n",
            "compute_types",
            "non-empty list",
        ),
        (
            "name: x\ntype: local\nwork_dir: /w\ninsecure_skip_host_key_check: yes please\n",
            "insecure_skip_host_key_check",
            "true or false",
        ),
        ("name: x\ntype: local\nwork_dir: /w\nkey_file: nowhere\n", "key_file", "no such file"),
        (
            "name: x\ntype: local\nwork_dir: /w\ntemplate: missing.sh.j2\n",
            "template",
            "no such file",
        ),
        ("name: x y\ntype: local\nwork_dir: /w\n", "name", "letters, digits"),
        ("name: x\ntype: local\nwork_dir: /w\naccount: a b\n", "account", "no blanks"),
        (
            "name: x\ntype: local\nwork_dir: /w\nssh_max_channels: 10\n",
            "ssh_max_channels",
            "between 1 and 8",
        ),
        (
            "name: x\ntype: local\nwork_dir: /w\nenvironment_setup: {a: 1}\n",
            "environment_setup",
            "list of shell lines",
        ),
    ],
)
def test_invalid_files_name_file_field_and_problem(config_dir, text, field, problem):
    path = write(config_dir, "bad.yaml", text)
    with pytest.raises(ClusterConfigError) as info:
        load_clusters(config_dir)
    error = info.value
    assert (error.source, error.field) == (str(path), field)
    assert problem in error.problem
    assert str(error).startswith(f"{path}: field '{field}': ")


def test_duplicate_names_name_both_files(config_dir):
    first = write(config_dir, "a.yaml", "name: same\ntype: local\nwork_dir: /a\n")
    second = write(config_dir, "b.yaml", "name: same\ntype: local\nwork_dir: /b\n")
    with pytest.raises(ClusterConfigError) as info:
        load_clusters(config_dir)
    assert info.value.source == str(second) and info.value.field == "name"
    assert str(first) in str(info.value)


def test_broken_yaml_and_wrong_shapes(config_dir):
    path = write(config_dir, "broken.yaml", "name: [unclosed\n")
    with pytest.raises(ClusterConfigError, match="is not valid YAML") as info:
        load_clusters(config_dir)
    assert str(info.value).startswith(str(path))
    path.write_text("- just\n- a list\n")
    with pytest.raises(ClusterConfigError, match="must be a mapping"):
        load_clusters(config_dir)


def test_missing_or_empty_directory(tmp_path):
    with pytest.raises(ClusterConfigError, match="is not a directory"):
        load_clusters(tmp_path)
    (tmp_path / "clusters.d").mkdir()
    with pytest.raises(ClusterConfigError, match="holds no"):
        load_clusters(tmp_path)


def test_insecure_host_key_setting_is_warned_about_and_exclusive(config_dir, caplog):
    write(
        config_dir,
        "i.yaml",
        "name: i\ntype: slurm\nhost: h\nuser: u\nwork_dir: /w\n"
        "insecure_skip_host_key_check: true\n",
    )
    [cluster] = load_clusters(config_dir)
    assert cluster.insecure_skip_host_key_check
    assert "insecure_skip_host_key_check is on" in caplog.text
    write(
        config_dir,
        "i.yaml",
        "name: i\ntype: slurm\nhost: h\nuser: u\nwork_dir: /w\n"
        f"insecure_skip_host_key_check: true\n"
        f"known_hosts: {config_dir / 'known_hosts'}\n",
    )
    with pytest.raises(ClusterConfigError, match="contradicts known_hosts"):
        load_clusters(config_dir)


def test_template_override_is_read(config_dir):
    (config_dir / "clusters.d").mkdir(exist_ok=True)
    (config_dir / "clusters.d" / "site.sh.j2").write_text("#!/bin/bash\n# {{ name }}\n")
    write(config_dir, "t.yaml", "name: t\ntype: local\nwork_dir: /w\ntemplate: site.sh.j2\n")
    [cluster] = load_clusters(config_dir)
    assert cluster.template == str(config_dir / "clusters.d" / "site.sh.j2")
    assert cluster.template_source() == "#!/bin/bash\n# {{ name }}\n"
