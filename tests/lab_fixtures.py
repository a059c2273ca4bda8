"""pytest plugin: session-scoped fixtures that start the real batch-system lab.

Load it with ``-p lab_fixtures`` or ``pytest_plugins = ["lab_fixtures"]`` (``tests`` must be
on ``sys.path``). Fixtures (all session-scoped, started on first use, stopped at session end):

* ``lab_dir`` - scratch directory of the lab (runs ``tests/lab/install.sh`` first).
* ``slurm`` - a started :class:`lab.SlurmCluster`.
* ``gridengine`` - a started :class:`lab.GridEngine`.
* ``sshd`` - a started :class:`lab.SSHServer` whose remote commands see ``SLURM_CONF`` and the
  ``SGE_*`` variables (the clusters themselves start only if a test asks for them).
* ``torque`` - :class:`lab.TorqueWrappers`.
* ``torque_sshd`` - a second :class:`lab.SSHServer` with the torque wrappers first on PATH and
  ``SLURM_CONF`` set; it starts ``slurm`` as well.

A daemon that cannot start fails the test (with its log tail); nothing here skips.
Set ``AIRAVATA_LAB_KEEP=1`` to keep the lab directory after the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

import lab


class _Daemon(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def _start(request: pytest.FixtureRequest, daemon: _Daemon) -> None:
    """Start ``daemon`` and stop it when the session ends; fail (never skip) on error."""
    request.addfinalizer(daemon.stop)
    try:
        daemon.start()
    except (lab.LabError, OSError, KeyError, subprocess.SubprocessError) as exc:
        message = f"could not start {daemon!r}: {exc}"
    else:
        return
    if "--- tail of" not in message:
        for log in getattr(daemon, "logs", []):
            if Path(log).exists():
                message += f"\n--- tail of {log} ---\n{lab.log_tail(log)}"
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def lab_dir() -> Iterator[Path]:
    """Scratch directory for the lab's daemons (readable by ``hpcuser``)."""
    try:
        lab.install()
    except lab.LabError as exc:
        pytest.fail(str(exc), pytrace=False)
    path = lab.make_lab_dir()
    yield path
    if os.environ.get("AIRAVATA_LAB_KEEP") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def _lab_slurm(lab_dir: Path) -> lab.SlurmCluster:
    """The Slurm cluster object (ports and paths fixed, not started)."""
    return lab.SlurmCluster(lab_dir)


@pytest.fixture(scope="session")
def _lab_gridengine(lab_dir: Path) -> lab.GridEngine:
    """The Grid Engine cell object (ports and paths fixed, not started)."""
    return lab.GridEngine(lab_dir)


@pytest.fixture(scope="session")
def slurm(request: pytest.FixtureRequest, _lab_slurm: lab.SlurmCluster) -> lab.SlurmCluster:
    """A running one-node Slurm cluster (partition ``slurm.partition``)."""
    _start(request, _lab_slurm)
    return _lab_slurm


@pytest.fixture(scope="session")
def gridengine(request: pytest.FixtureRequest, _lab_gridengine: lab.GridEngine) -> lab.GridEngine:
    """A running Grid Engine cell (queue ``gridengine.queue``)."""
    _start(request, _lab_gridengine)
    return _lab_gridengine


@pytest.fixture(scope="session")
def sshd(
    request: pytest.FixtureRequest,
    lab_dir: Path,
    _lab_slurm: lab.SlurmCluster,
    _lab_gridengine: lab.GridEngine,
) -> lab.SSHServer:
    """sshd for ``hpcuser``; remote ``sbatch``/``qsub`` reach the lab's Slurm and SGE."""
    server = lab.SSHServer(lab_dir, set_env={**_lab_slurm.env, **_lab_gridengine.env})
    _start(request, server)
    return server


@pytest.fixture(scope="session")
def torque() -> lab.TorqueWrappers:
    """The PBS/Torque wrapper directory (drives Slurm)."""
    wrappers = lab.TorqueWrappers()
    try:
        wrappers.start()
    except lab.LabError as exc:
        pytest.fail(str(exc), pytrace=False)
    return wrappers


@pytest.fixture(scope="session")
def torque_sshd(
    request: pytest.FixtureRequest,
    lab_dir: Path,
    slurm: lab.SlurmCluster,
    torque: lab.TorqueWrappers,
) -> lab.SSHServer:
    """A second sshd whose ``qsub``/``qstat``/``qdel`` are the torque wrappers over Slurm."""
    server = lab.SSHServer(
        lab_dir, name="torque-sshd", set_env_path=torque.bin_dir, set_env=slurm.env
    )
    _start(request, server)
    return server
