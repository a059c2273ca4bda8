"""Real batch systems on loopback for the airavata-hpc test suite.

Each class starts real daemons inside a scratch directory (the "lab") and stops them again by
the PIDs in their pid files, never by name:

* :class:`SSHServer` - an OpenSSH ``sshd`` on ``127.0.0.1`` that lets ``hpcuser`` in with a key
  made for it; ``SetEnv`` tells remote commands where the batch systems are.
* :class:`SlurmCluster` - a one-node Slurm 22.05 (private ``munged``, ``slurmctld``, ``slurmd``)
  with its own ``slurm.conf`` and ports; remote commands find it through ``SLURM_CONF``.
* :class:`GridEngine` - Son of Grid Engine 8.1.9 in a private cell with its own ports; remote
  commands find it through ``SGE_CELL``, ``SGE_QMASTER_PORT`` and ``SGE_EXECD_PORT``.
* :class:`TorqueWrappers` - Slurm's PBS/Torque wrapper scripts, meant to be first on the PATH of
  a second ``sshd`` so that ``qsub`` over it drives the real Slurm.

Nothing here changes the machine-wide default configuration of Slurm or Grid Engine, so two
labs can run side by side. ``tests/lab/install.sh`` installs the packages (root only).
The module needs nothing beyond the standard library; see ``tests/lab/README.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

LAB_USER = "hpcuser"
LOOPBACK = "127.0.0.1"
INSTALL_SCRIPT = Path(__file__).resolve().parent / "lab" / "install.sh"
TORQUE_DIR = Path(os.environ.get("AIRAVATA_LAB_TORQUE_DIR", "/opt/airavata-lab/torque"))
SGE_ROOT = "/var/lib/gridengine"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


class LabError(RuntimeError):
    """A lab daemon could not be installed, started or stopped."""


# --------------------------------------------------------------------------- helpers


def install(timeout: float = 900.0) -> None:
    """Run ``tests/lab/install.sh`` (idempotent; milliseconds when all is installed)."""
    if os.geteuid() != 0:
        raise LabError(
            "the test lab needs root: it installs Debian packages, creates the user "
            f"{LAB_USER!r} and starts sshd, Slurm and Grid Engine (run the tests as root)"
        )
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise LabError(
            f"{INSTALL_SCRIPT} failed with exit {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


def make_lab_dir(prefix: str = "airavata-lab-", base: str | None = None) -> Path:
    """Create a scratch directory that the lab's daemons and ``hpcuser`` can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    path.chmod(0o755)
    return path


def free_port() -> int:
    """Return a TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path | str, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file (or a note that it is missing)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"<no log {path}: {exc.strerror}>"
    return "\n".join(text.splitlines()[-lines:])


def read_pid(path: Path | str) -> int | None:
    """Return the PID stored in a pid file, or ``None``."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def pid_alive(pid: int | None) -> bool:
    """Tell whether ``pid`` runs (zombies, which PID 1 here reaps slowly, count as dead)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def stop_pid(pid: int | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to ``pid``, wait up to ``timeout`` s, then SIGKILL; True if it had run."""
    if not pid_alive(pid):
        return False
    assert pid is not None
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    if not _wait_dead(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        _wait_dead(pid, 5.0)
    return True


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    logs: Sequence[Path] = (),
    interval: float = 0.05,
) -> object:
    """Poll ``predicate`` until it returns something true; raise :class:`LabError` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}" + _tails(logs))
        time.sleep(interval)


def _tails(logs: Sequence[Path]) -> str:
    return "".join(f"\n--- tail of {log} ---\n{log_tail(log)}" for log in logs)


def run(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    check: bool = True,
    user: str | None = None,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command locally (as ``user`` via runuser if given) with extra ``env``."""
    full_env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
    if user is not None:
        full_env["HOME"] = pwd.getpwnam(user).pw_dir
        full_env["USER"] = full_env["LOGNAME"] = user
    full_env.update(env or {})
    cmd = list(argv)
    if user is not None:
        cmd = ["/usr/sbin/runuser", "-u", user, "--", *cmd]
    proc = subprocess.run(
        cmd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd if cwd is not None else (full_env["HOME"] if user else None),
    )
    if check and proc.returncode != 0:
        raise LabError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-2000:]}"
        )
    return proc


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _mkdir(path: Path, owner: str | None = None, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner:
        _chown(path, owner)
    return path


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            kids.append(int(entry.name))
    return kids


def _check_traversable(path: Path) -> None:
    """Daemons running as slurm, munge, sgeadmin and hpcuser must reach the lab directory."""
    for part in [path, *path.parents]:
        if part.exists() and not part.stat().st_mode & 0o001:
            raise LabError(
                f"{part} is not searchable by other users (mode {part.stat().st_mode:o}); "
                "the lab's daemons run as slurm, munge, sgeadmin and hpcuser: use "
                "lab.make_lab_dir() or a directory with o+x on every level"
            )


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------- sshd


class SSHServer:
    """An OpenSSH server on 127.0.0.1 that admits only ``hpcuser`` by key.

    Attributes a test needs: ``host``, ``port``, ``user``, ``key_file`` (private ed25519 key of
    the client), ``known_hosts`` (one ``[127.0.0.1]:PORT ssh-ed25519 ...`` line), ``pid_file``,
    ``log_file``, ``config_file``, ``env`` (what ``SetEnv`` gives remote commands).
    ``set_env_path`` puts a directory first on the PATH of remote commands; ``set_env`` adds
    other variables (e.g. ``SLURM_CONF``); ``max_sessions`` sets ``MaxSessions`` (default:
    left at OpenSSH's default of 10, so channel limits are real). ``max_startups`` is raised
    from OpenSSH's ``10:30:100`` so that tests opening many connections at once are not
    refused at random; pass ``None`` to keep the default.
    """

    def __init__(
        self,
        lab_dir: Path | str,
        port: int | None = None,
        set_env_path: Path | str | None = None,
        max_sessions: int | None = None,
        *,
        set_env: Mapping[str, str] | None = None,
        name: str = "sshd",
        max_startups: str | None = "100",
        log_level: str = "INFO",
        extra_config: Sequence[str] = (),
    ) -> None:
        self.dir = Path(lab_dir) / name
        self.name = name
        self.host = LOOPBACK
        self.user = LAB_USER
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.max_sessions = max_sessions
        self.max_startups = max_startups
        self.log_level = log_level
        self.extra_config = list(extra_config)
        self.env: dict[str, str] = dict(set_env or {})
        if set_env_path is not None:
            self.env["PATH"] = f"{set_env_path}:{self.env.get('PATH', USER_PATH)}"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.key_file = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.config_file = self.dir / "sshd_config"
        self.pid_file = self.dir / "sshd.pid"
        self.log_file = self.dir / "sshd.log"
        self.logs = [self.log_file]

    def __repr__(self) -> str:
        return f"SSHServer({self.user}@{self.host}:{self.port}, dir={self.dir})"

    @property
    def pid(self) -> int | None:
        """PID of the listening sshd, if it runs."""
        pid = read_pid(self.pid_file)
        return pid if pid_alive(pid) else None

    def connect_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``asyncssh.connect`` that verify the host key."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "client_keys": [str(self.key_file)],
            "known_hosts": str(self.known_hosts),
        }

    def start(self) -> None:
        """Make keys and config (first time), start sshd and wait until it greets."""
        self._launch(may_move=not self._fixed_port)

    def _launch(self, may_move: bool) -> None:
        if self.pid:
            return
        _check_traversable(self.dir.parent)
        _mkdir(self.dir)
        _mkdir(Path("/run/sshd"))
        self._make_keys()
        self._authorize()
        for attempt in range(3):
            self._write_config()
            self.log_file.unlink(missing_ok=True)
            self.pid_file.unlink(missing_ok=True)
            run(["/usr/sbin/sshd", "-t", "-f", str(self.config_file)])
            run(["/usr/sbin/sshd", "-f", str(self.config_file), "-E", str(self.log_file)])
            try:
                wait_for(self._greets, 10, f"sshd on port {self.port}", [self.log_file])
                return
            except LabError:
                in_use = "Address already in use" in log_tail(self.log_file)
                self.stop(remove_key=False)
                if not may_move or not in_use or attempt == 2:
                    raise
                self.port = free_port()

    def stop(self, remove_key: bool = True) -> None:
        """Stop the listener and its connections (by PID); drop our authorized key."""
        pid = read_pid(self.pid_file)
        if pid_alive(pid):
            assert pid is not None
            self.drop_connections()
            stop_pid(pid, 5)
        self.pid_file.unlink(missing_ok=True)
        if remove_key:
            self._unauthorize()

    def restart(self) -> None:
        """Stop and start again on the same port with the same keys."""
        self.stop(remove_key=False)
        self._launch(may_move=False)

    def drop_connections(self) -> int:
        """Kill the sshd processes serving current connections; the listener keeps running.

        The client sees its connection reset, as on a network drop. Commands that the
        sessions had started are left alone (they get SIGHUP or EPIPE as usual).
        Returns how many sshd processes were killed.
        """
        pid = read_pid(self.pid_file)
        if not pid_alive(pid):
            return 0
        assert pid is not None
        victims: list[int] = []
        todo = _children(pid)
        while todo:
            child = todo.pop()
            if _comm(child) == "sshd":
                victims.append(child)
                todo.extend(_children(child))
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for victim in victims:
            _wait_dead(victim, 2)
        return len(victims)

    def connections(self) -> list[int]:
        """PIDs of the per-connection sshd processes under the listener."""
        pid = self.pid
        return [p for p in _children(pid) if _comm(p) == "sshd"] if pid else []

    # internals

    def _greets(self) -> bool:
        if not pid_alive(read_pid(self.pid_file)):
            return False
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return sock.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def _make_keys(self) -> None:
        for key in (self.host_key, self.key_file):
            if not key.exists():
                run(
                    [
                        "ssh-keygen",
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        f"airavata-lab {self.dir}",
                        "-f",
                        str(key),
                    ]
                )
        self.key_file.chmod(0o600)

    def _write_known_hosts(self) -> None:
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {kind} {blob}\n")

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            f"AllowUsers {self.user}",
            "UsePAM no",
            "UseDNS no",
            "Subsystem sftp internal-sftp",
            f"LogLevel {self.log_level}",
        ]
        if self.max_sessions is not None:
            lines.append(f"MaxSessions {self.max_sessions}")
        if self.max_startups is not None:
            lines.append(f"MaxStartups {self.max_startups}")
        if self.env:
            pairs = " ".join(f'"{k}={v}"' for k, v in sorted(self.env.items()))
            lines.append(f"SetEnv {pairs}")
        lines.extend(self.extra_config)
        self.config_file.write_text("\n".join(lines) + "\n")
        self._write_known_hosts()

    def _authorized_keys(self) -> Path:
        return Path(pwd.getpwnam(self.user).pw_dir) / ".ssh" / "authorized_keys"

    def _our_key_line(self) -> str:
        return self.key_file.with_suffix(".pub").read_text().strip()

    def _authorize(self) -> None:
        path = self._authorized_keys()
        _mkdir(path.parent, self.user, 0o700)
        line = self._our_key_line()
        with _authorized_keys_lock():
            lines = path.read_text().splitlines() if path.exists() else []
            if line not in lines:
                lines.append(line)
                path.write_text("\n".join(lines) + "\n")
            _chown(path, self.user)
            path.chmod(0o600)

    def _unauthorize(self) -> None:
        path = self._authorized_keys()
        if not path.exists() or not self.key_file.with_suffix(".pub").exists():
            return
        line = self._our_key_line()
        with _authorized_keys_lock():
            lines = path.read_text().splitlines()
            if line in lines:
                path.write_text("".join(f"{x}\n" for x in lines if x != line))


@contextlib.contextmanager
def _authorized_keys_lock() -> Iterator[None]:
    """Serialise edits of hpcuser's authorized_keys between labs running at the same time."""
    fd = os.open("/run/airavata-lab-authorized-keys.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- Slurm


class SlurmCluster:
    """A one-node Slurm 22.05 cluster (node ``localhost``, 16 CPUs) in ``lab_dir/slurm``.

    It has its own ``munged`` (socket in the lab, named in ``AuthInfo``), its own
    ``slurm.conf`` (``conf``) and its own controller and node ports, so the machine's
    ``/etc/slurm`` is not touched. Commands find it through ``SLURM_CONF``: ``env`` holds
    that, for ``SSHServer(set_env=...)`` or local ``subprocess`` calls.
    """

    def __init__(
        self,
        lab_dir: Path | str,
        *,
        name: str = "slurm",
        cluster_name: str = "testcluster",
        partition: str = "debug",
        cpus: int = 16,
        min_job_age: int = 600,
        extra_conf: Sequence[str] = (),
    ) -> None:
        self.dir = Path(lab_dir) / name
        self.cluster_name = cluster_name
        self.partition = partition
        self.cpus = cpus
        self.min_job_age = min_job_age
        self.extra_conf = list(extra_conf)
        self.node = "localhost"
        self.conf = self.dir / "slurm.conf"
        self.conf_path = self.conf
        self.env = {"SLURM_CONF": str(self.conf)}
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        self.munge_dir = self.dir / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.munge_pid_file = self.munge_dir / "munged.pid"
        self.munge_log = self.munge_dir / "munged.log"
        self.state_dir = self.dir / "state"
        self.spool_dir = self.dir / "spool"
        self.log_dir = self.dir / "log"
        self.run_dir = self.dir / "run"
        self.ctld_log = self.log_dir / "slurmctld.log"
        self.slurmd_log = self.log_dir / "slurmd.log"
        self.ctld_pid_file = self.run_dir / "slurmctld.pid"
        self.slurmd_pid_file = self.run_dir / "slurmd.pid"
        self.logs = [self.ctld_log, self.slurmd_log, self.munge_log]

    def __repr__(self) -> str:
        return f"SlurmCluster({self.conf}, port={self.ctld_port})"

    def start(self) -> None:
        """Start munged, slurmctld (wait for UP) and slurmd (wait for idle)."""
        _check_traversable(self.dir.parent)
        _mkdir(self.dir)
        for path in (self.state_dir, self.log_dir, self.run_dir):
            _mkdir(path, "slurm")
        _mkdir(self.spool_dir)
        self._write_conf()
        self._start_munge()
        if not pid_alive(read_pid(self.ctld_pid_file)):
            run(["/usr/sbin/slurmctld", "-i", "-f", str(self.conf)], env=self.env)
        wait_for(self._ctld_up, 20, "slurmctld to answer scontrol ping", self.logs)
        if not pid_alive(read_pid(self.slurmd_pid_file)):
            run(["/usr/sbin/slurmd", "-N", self.node, "-f", str(self.conf)], env=self.env)
        wait_for(self._node_idle, 20, f"node {self.node} to be idle", self.logs)

    def stop(self) -> None:
        """Cancel all jobs, stop slurmd, slurmctld and the lab's munged (by PID)."""
        if pid_alive(read_pid(self.ctld_pid_file)):
            run(
                ["scancel", "--full", f"--partition={self.partition}"],
                env=self.env,
                check=False,
                timeout=10,
            )
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and self._active_jobs():
                time.sleep(0.1)
        stop_pid(read_pid(self.slurmd_pid_file), 10)
        stop_pid(read_pid(self.ctld_pid_file), 10)
        stop_pid(read_pid(self.munge_pid_file), 5)

    def restart_controller(self) -> None:
        """Restart slurmctld only (it keeps its state; jobs survive)."""
        stop_pid(read_pid(self.ctld_pid_file), 10)
        run(["/usr/sbin/slurmctld", "-f", str(self.conf)], env=self.env)
        wait_for(self._ctld_up, 20, "slurmctld to answer scontrol ping", self.logs)

    def scontrol(self, *args: str, check: bool = True) -> str:
        """Run ``scontrol`` as root against this cluster and return its stdout."""
        proc = run(["scontrol", *args], env=self.env, check=check, timeout=15)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def _active_jobs(self) -> list[str]:
        proc = run(
            ["squeue", "-h", "-t", "running,completing,configuring", "-o", "%i"],
            env=self.env,
            check=False,
            timeout=10,
        )
        return proc.stdout.split()

    def _ctld_up(self) -> bool:
        pid = read_pid(self.ctld_pid_file)  # None while the daemon is still writing it
        if pid is not None and not pid_alive(pid):
            raise LabError(f"slurmctld (pid {pid}) exited" + _tails(self.logs))
        proc = run(["scontrol", "ping"], env=self.env, check=False, timeout=10)
        return "is UP" in proc.stdout

    def _node_idle(self) -> bool:
        proc = run(["sinfo", "-h", "-n", self.node, "-o", "%t"], env=self.env, check=False)
        return proc.stdout.strip() == "idle"

    def _start_munge(self) -> None:
        if pid_alive(read_pid(self.munge_pid_file)):
            return
        _mkdir(self.munge_dir, "munge")
        run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "/usr/sbin/munged",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.munge_pid_file}",
                f"--log-file={self.munge_log}",
                f"--seed-file={self.munge_dir / 'munged.seed'}",
            ]
        )
        wait_for(
            lambda: (
                run(
                    ["munge", "-n", "-S", str(self.munge_socket)], check=False, timeout=5
                ).returncode
                == 0
            ),
            10,
            "munged",
            [self.munge_log],
        )

    def _write_conf(self) -> None:
        lines = [
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.node}({LOOPBACK})",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=slurm",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.state_dir}",
            f"SlurmdSpoolDir={self.spool_dir}",
            f"SlurmctldPidFile={self.ctld_pid_file}",
            f"SlurmdPidFile={self.slurmd_pid_file}",
            f"SlurmctldLogFile={self.ctld_log}",
            f"SlurmdLogFile={self.slurmd_log}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmdParameters=config_overrides",
            f"MinJobAge={self.min_job_age}",
            "MaxJobCount=100000",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            f"NodeName={self.node} NodeAddr={LOOPBACK} CPUs={self.cpus} Boards=1 "
            f"SocketsPerBoard=1 CoresPerSocket={self.cpus} ThreadsPerCore=1 RealMemory=4000",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE "
            "State=UP",
        ]
        lines.extend(self.extra_conf)
        self.conf.write_text("\n".join(lines) + "\n")
        self.conf.chmod(0o644)


# --------------------------------------------------------------------------- Grid Engine


class GridEngine:
    """Son of Grid Engine 8.1.9 in a private cell (``sge_qmaster`` + ``sge_execd``).

    The cell directory lives in ``lab_dir/sge/cell`` and is linked as
    ``/var/lib/gridengine/<cell>`` (SGE insists on ``$SGE_ROOT/$SGE_CELL``); spool, execd spool
    and accounting stay in the lab. The qmaster and execd listen on ports of their own.
    ``env`` (``SGE_ROOT``, ``SGE_CELL``, ``SGE_QMASTER_PORT``, ``SGE_EXECD_PORT``) is what a
    client needs: pass it to ``SSHServer(set_env=...)``. ``queue`` has ``slots`` slots on host
    ``localhost`` and runs job scripts with ``/bin/bash``.
    """

    def __init__(
        self,
        lab_dir: Path | str,
        *,
        name: str = "sge",
        queue: str = "debug.q",
        slots: int = 16,
        cell: str | None = None,
    ) -> None:
        self.dir = Path(lab_dir) / name
        self.queue = queue
        self.slots = slots
        self.sge_root = SGE_ROOT
        self.cell = cell or f"airavata-lab-{secrets.token_hex(4)}"
        self.cell_link = Path(self.sge_root) / self.cell
        self.cell_dir = self.dir / "cell"
        self.qmaster_port = free_port()
        self.execd_port = free_port()
        self.env = {
            "SGE_ROOT": self.sge_root,
            "SGE_CELL": self.cell,
            "SGE_QMASTER_PORT": str(self.qmaster_port),
            "SGE_EXECD_PORT": str(self.execd_port),
        }
        self.spool_db = self.dir / "spooldb"
        self.qmaster_spool = self.dir / "qmaster"
        self.execd_spool = self.dir / "execd"
        self.qmaster_pid_file = self.qmaster_spool / "qmaster.pid"
        self.execd_pid_file = self.execd_spool / "localhost" / "execd.pid"
        self.qmaster_log = self.qmaster_spool / "messages"
        self.execd_log = self.execd_spool / "localhost" / "messages"
        self.accounting_file = self.cell_dir / "common" / "accounting"
        self.logs = [self.qmaster_log, self.execd_log]

    def __repr__(self) -> str:
        return f"GridEngine(cell={self.cell}, port={self.qmaster_port})"

    def qconf(self, *args: str, check: bool = True) -> str:
        """Run ``qconf`` as root in this cell and return its stdout."""
        return run(["qconf", *args], env=self.env, check=check, timeout=15).stdout

    def start(self) -> None:
        """Create the cell (first time), start qmaster and execd, configure the queue."""
        _check_traversable(self.dir.parent)
        if not (self.spool_db / "sge").exists():
            self._create_cell()
        self.cell_link.unlink(missing_ok=True)
        self.cell_link.symlink_to(self.cell_dir)
        _mkdir(Path("/var/run/gridengine"), "sgeadmin")
        if not pid_alive(read_pid(self.qmaster_pid_file)):
            self.qmaster_pid_file.unlink(missing_ok=True)
            run(["/usr/sbin/sge_qmaster"], env=self.env)
        wait_for(self._qmaster_up, 20, "sge_qmaster", self.logs)
        if not pid_alive(read_pid(self.execd_pid_file)):
            run(["/usr/sbin/sge_execd"], env=self.env)
        wait_for(self._execd_up, 20, "sge_execd to report load", self.logs)
        self._configure()

    def stop(self, grace: float = 1.0) -> None:
        """Delete jobs, shut down execd and qmaster (``qconf -ke/-km``), kill by PID if slow.

        sge_qmaster 8.1.9 takes 8-11 s for a controlled shutdown here (``qconf -km`` and
        SIGTERM alike; it logs "jvm thread is not running" and then waits), so after
        ``grace`` seconds it gets SIGKILL. Its Berkeley DB spool survives that: ``start()``
        again works and keeps the configuration, but job ids start over from 1 because the
        killed qmaster never wrote ``jobseqnum``; use :meth:`restart` when ids must go on.
        """
        qmaster = read_pid(self.qmaster_pid_file)
        execd = read_pid(self.execd_pid_file)
        if pid_alive(qmaster):
            run(["qdel", "-u", "*"], env=self.env, check=False, timeout=10)
            if execd is not None and pid_alive(execd):
                run(["qconf", "-ke", "localhost"], env=self.env, check=False, timeout=10)
                _wait_dead(execd, 5)
            run(["qconf", "-km"], env=self.env, check=False, timeout=10)
            if qmaster and not _wait_dead(qmaster, grace):
                stop_pid(qmaster, 0.5, signal.SIGKILL)
        stop_pid(execd, 5)
        if self.cell_link.is_symlink():
            self.cell_link.unlink()

    def restart(self) -> None:
        """Controlled restart (waits out the slow qmaster shutdown so job ids go on)."""
        self.stop(grace=30.0)
        self.start()

    # internals

    def _qmaster_up(self) -> bool:
        proc = run(["qconf", "-sh"], env=self.env, check=False, timeout=10)
        return proc.returncode == 0

    def _execd_up(self) -> bool:
        proc = run(["qhost", "-h", "localhost"], env=self.env, check=False, timeout=10)
        for line in proc.stdout.splitlines():
            fields = line.split()
            if fields and fields[0] == "localhost":
                return fields[6] != "-"
        return False

    def _create_cell(self) -> None:
        common = self.cell_dir / "common"
        for path in (
            common,
            self.spool_db,
            self.qmaster_spool,
            self.qmaster_spool / "job_scripts",
            self.execd_spool,
        ):
            _mkdir(path, "sgeadmin")
        _mkdir(self.dir)
        (common / "bootstrap").write_text(
            "# Version: 6.2\n"
            "admin_user              sgeadmin\n"
            "default_domain          none\n"
            "ignore_fqdn             false\n"
            "spooling_method         berkeleydb\n"
            "spooling_lib            libspoolb\n"
            f"spooling_params         {self.spool_db}\n"
            "binary_path             /usr/sbin\n"
            f"qmaster_spool_dir       {self.qmaster_spool}\n"
            "security_mode           none\n"
            "listener_threads        2\n"
            "worker_threads          2\n"
            "scheduler_threads       1\n"
        )
        (common / "act_qmaster").write_text("localhost\n")
        # Without this every client fails: "access denied (client IP resolved to host
        # name localhost ...)".
        (common / "host_aliases").write_text(f"localhost {socket.gethostname()}\n")
        (common / "settings.sh").write_text(
            "".join(f"{k}={v}; export {k}\n" for k, v in self.env.items())
        )
        for path in common.iterdir():
            _chown(path, "sgeadmin")
            path.chmod(0o644)
        conf = Path("/usr/share/gridengine/default-configuration").read_text()
        conf = conf.replace("/var/spool/gridengine/execd", str(self.execd_spool))
        conf = re.sub(r"flush_time=\S+", "flush_time=00:00:01 accounting_flush_time=00:00:00", conf)
        global_init = self.dir / "global-init"
        global_init.write_text(conf)
        global_init.chmod(0o644)
        util = "/usr/share/gridengine/util/resources"
        script = " && ".join(
            [
                f"/usr/lib/gridengine/spoolinit berkeleydb libspoolb {self.spool_db} init",
                f"/usr/lib/gridengine/spooldefaults configuration {global_init}",
                f"/usr/lib/gridengine/spooldefaults complexes {util}/centry",
                f"/usr/lib/gridengine/spooldefaults usersets {util}/usersets",
                "/usr/lib/gridengine/spooldefaults managers sgeadmin",
            ]
        )
        self.cell_link.unlink(missing_ok=True)
        self.cell_link.symlink_to(self.cell_dir)
        run(["sh", "-c", script], env=self.env, user="sgeadmin", cwd="/")

    def _configure(self) -> None:
        if self.queue in self.qconf("-sql", check=False).split():
            return
        self.qconf("-as", "localhost")
        template = self.qconf("-sq")
        values = {
            "qname": self.queue,
            "hostlist": "localhost",
            "slots": str(self.slots),
            "shell": "/bin/bash",
            "pe_list": "NONE",
            # The default np_load_avg=1.75 puts the queue in alarm on a busy 2-core machine.
            "load_thresholds": "NONE",
        }
        qfile = self.dir / self.queue
        qfile.write_text(_set_fields(template, values))
        self.qconf("-Aq", str(qfile))
        sconf = _set_fields(
            self.qconf("-ssconf"),
            {
                "schedule_interval": "0:0:1",
                "flush_submit_sec": "1",
                "flush_finish_sec": "1",
                "job_load_adjustments": "NONE",
                "load_adjustment_decay_time": "0:0:0",
            },
        )
        sconf_file = self.dir / "sconf"
        sconf_file.write_text(sconf)
        self.qconf("-Msconf", str(sconf_file))


def _set_fields(text: str, values: Mapping[str, str]) -> str:
    """Replace ``name value`` lines of an SGE config listing."""
    out = []
    for line in text.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() else ""
        out.append(f"{key:<20} {values[key]}" if key in values else line)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- PBS wrappers


class TorqueWrappers:
    """Slurm's ``qsub``/``qstat``/``qdel`` (slurm-wlm-torque) unpacked beside gridengine.

    ``bin_dir`` holds the Perl wrappers and links to ``sbatch``, ``squeue`` ... (the wrappers
    call their neighbours). Put it first on a second sshd's PATH together with the Slurm
    cluster's ``env``: ``SSHServer(lab_dir, set_env_path=tw.bin_dir, set_env=slurm.env)``.
    """

    COMMANDS = ("qsub", "qstat", "qdel")

    def __init__(self, bin_dir: Path | str | None = None) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir is not None else TORQUE_DIR / "bin"
        self.path = f"{self.bin_dir}:{USER_PATH}"

    def start(self) -> None:
        """Check that the wrappers are installed (nothing to run)."""
        missing = [c for c in self.COMMANDS if not (self.bin_dir / c).exists()]
        if missing:
            raise LabError(
                f"torque wrappers missing in {self.bin_dir}: {missing} (run {INSTALL_SCRIPT})"
            )

    def stop(self) -> None:
        """Nothing to stop."""
