"""The wheel `pip install .` builds holds every subpackage and data file the service loads,
and installs the adapters under airavata_hpc, never as a top-level `adapters` package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_templates_spec_examples_and_namespaced_adapters(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("airavata_hpc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    for expected in (
        "airavata_hpc/web/app.py",
        "airavata_hpc/openapi.yaml",
        "airavata_hpc/examples/integral.yaml",
        "airavata_hpc/adapters/slurm.py",
        "airavata_hpc/adapters/pbs.py",
        "airavata_hpc/job_templates/slurm.sh.j2",
        "airavata_hpc/job_templates/_element.sh.j2",
    ):
        assert expected in names, expected
    assert not any(name.startswith(("adapters/", "job_templates/", "tests/")) for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "airavata-hpc = airavata_hpc.admin_cli:main" in text
    assert "airavata = airavata_hpc.user_cli:main" in text
