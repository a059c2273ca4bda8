"""The README's first command runs the demo; this runs the same module, as a subprocess, and
the researcher's `submit --watch` against a server whose engine really runs the sweep."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources

from airavata_hpc.clusters import parse_cluster
from airavata_hpc.engine import Engine
from airavata_hpc.settings import Settings

from support import LiveServer


def test_the_demo_runs_the_sweep_to_completion_and_cleans_up():
    result = subprocess.run(
        [sys.executable, "-m", "airavata_hpc.demo"], capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "COMPLETED: 10 task(s): 10 completed" in out
    estimates = set(re.findall(r"integral=([0-9.]+)", out))
    assert len(estimates) >= 3  # the results differ by parameter
    scratch = re.search(r"SQLite in (\S+)\)", out).group(1)
    assert not os.path.exists(scratch)


def test_submit_watch_follows_a_real_run_to_the_end(tmp_path):
    cluster = parse_cluster(
        {"name": "local", "type": "local", "work_dir": str(tmp_path / "w"), "poll_interval": 0.3},
        "test",
    )
    server = LiveServer(
        Settings(port=0, database_url=f"sqlite:///{tmp_path / 'db'}"),
        engine_factory=lambda settings, metrics: Engine([cluster], metrics),
    )
    server.start()
    try:
        sweep = resources.files("airavata_hpc") / "examples" / "integral.yaml"
        env = {
            **os.environ,
            "AIRAVATA_SERVER": server.url,
            "AIRAVATA_TOKEN": server.token("alice"),
            "XDG_CONFIG_HOME": str(tmp_path),
        }
        result = subprocess.run(
            [sys.executable, "-m", "airavata_hpc.user_cli", "submit", str(sweep), "--watch"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert result.returncode == 0, result.stdout + result.stderr
        experiment_id = result.stdout.strip().splitlines()[0]
        status = server.client("alice").get(f"/experiments/{experiment_id}").json()
        assert status["status"] == "COMPLETED"
        assert "COMPLETED" in result.stdout + result.stderr
    finally:
        server.stop()
