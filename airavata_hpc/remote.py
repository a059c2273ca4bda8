"""The one place that runs processes and talks SSH: command runners for the clusters.

Everything that leaves this process goes through a :class:`CommandRunner`: ``run`` (one
command, argv quoted with :func:`shlex.join`, so nothing reaches a shell unquoted),
``write_files`` and ``read_files`` (many files in one go) and ``close``. Two implementations:

* :class:`LocalRunner` - asyncio subprocesses on this machine;
* :class:`SSHRunner` - asyncssh, ONE connection per (cluster, user) shared by every command and
  transfer. Channels are capped by a semaphore well below OpenSSH's default ``MaxSessions`` of
  10 (4 by default; opens started failing from 7 concurrent channels in the lab), and a refused
  channel open (:class:`asyncssh.ChannelOpenError`) is retried with backoff instead of being
  reported. Keepalives detect dead links; reconnects back off exponentially with jitter; host
  keys are verified against ``known_hosts`` unless the admin turned that off (logged as a
  warning). A circuit breaker per cluster fails fast for a cool-down period after repeated
  connection failures, and :meth:`SSHRunner.health` reports it.

Errors: a command that exits non-zero (with ``check=True``) raises :class:`RemoteCommandError`
naming the command, exit status, stdout and stderr. ``transient`` says whether trying again
later may help: true for lost connections, time-outs and ordinary non-zero exits (batch commands
fail for passing reasons such as a restarting controller or a stopped munge daemon, so callers
bound their retries), false for "command not found" (126/127). Connection problems raise the
subclass :class:`ClusterUnavailable`. None of them is ever a reason to fail a user's task.

Remote commands are written for a POSIX login shell (sh, bash, zsh, ksh) on the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import random
import secrets
import shlex
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import asyncssh

if TYPE_CHECKING:
    from airavata_hpc.clusters import ClusterConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Default time limit for one command, in seconds.
DEFAULT_TIMEOUT = 120.0
#: How much of stdout/stderr an error message shows.
ERROR_OUTPUT_LIMIT = 500
#: Exit statuses that mean the command itself is missing: retrying will not help.
_NOT_TRANSIENT_EXITS = frozenset({126, 127})
#: SFTP requests kept in flight per transfer batch.
_SFTP_PARALLEL = 32
#: asyncssh errors that mean the connection went away (as opposed to an error reply).
_LOST = (
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
)


def _truncate(text: str, limit: int = ERROR_OUTPUT_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more chars)"


@dataclass(frozen=True)
class CommandResult:
    """A finished command. ``exit_status`` is 128 + N for a command killed by signal N."""

    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class RemoteCommandError(Exception):
    """A command failed or could not be run; ``transient`` says whether a retry may help."""

    def __init__(
        self,
        command: str,
        exit_status: int | None,
        stdout: str,
        stderr: str,
        transient: bool,
        problem: str | None = None,
        cluster: str | None = None,
    ) -> None:
        self.command = command
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr
        self.transient = transient
        self.problem = problem or (
            f"exit status {exit_status}" if exit_status is not None else "no exit status"
        )
        self.cluster = cluster
        super().__init__(self.problem)

    def __str__(self) -> str:
        where = f"cluster {self.cluster}: " if self.cluster else ""
        parts = [f"{where}{self.problem}", f"command: {_truncate(self.command, 300)}"]
        parts.append(f"exit status: {self.exit_status}")
        parts.append(f"stdout: {_truncate(self.stdout) or '(empty)'}")
        parts.append(f"stderr: {_truncate(self.stderr) or '(empty)'}")
        parts.append("transient" if self.transient else "permanent")
        return "; ".join(parts)


class ClusterUnavailable(RemoteCommandError):
    """The cluster cannot be reached (connection failed, lost, or circuit open). Transient."""

    def __init__(self, cluster: str, problem: str, command: str = "") -> None:
        super().__init__(command, None, "", "", True, problem, cluster)


class HealthState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class RunnerHealth:
    """What the service reports about a cluster connection.

    ``unhealthy``: the circuit breaker is open (fails fast until ``retry_in`` seconds pass);
    ``degraded``: recent connection failures, or commands lost to a dropped connection;
    ``healthy`` otherwise.
    """

    cluster: str
    state: HealthState
    last_error: str | None = None
    consecutive_failures: int = 0
    retry_in: float | None = None
    connected: bool = False


@dataclass
class RunnerStats:
    """Plain counters for benchmarks and metrics (the service exports them)."""

    connections_opened: int = 0
    commands_issued: int = 0
    channel_open_retries: int = 0
    files_written: int = 0
    files_read: int = 0
    connection_failures: int = 0


class CommandRunner(Protocol):
    """How the rest of the service runs things on a cluster."""

    cluster: str
    stats: RunnerStats

    async def run(
        self,
        argv: Sequence[str],
        stdin: str | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        retry_lost: bool = False,
    ) -> CommandResult: ...

    async def write_files(self, files: Mapping[str, str]) -> None: ...

    async def read_files(self, paths: Iterable[str]) -> dict[str, str | None]: ...

    async def close(self) -> None: ...

    def health(self) -> RunnerHealth: ...


def join_argv(argv: Sequence[str]) -> str:
    """The shell command line for ``argv``: every element quoted (NUL bytes refused)."""
    if isinstance(argv, str) or not argv:
        raise ValueError("argv must be a non-empty list of strings")
    if not all(isinstance(arg, str) for arg in argv):
        raise ValueError(f"argv elements must be strings: {argv!r}")
    if any("\0" in arg for arg in argv):
        raise ValueError("argv must not contain NUL bytes")
    return shlex.join(argv)


def _failure(cluster: str, result: CommandResult, problem: str | None = None) -> RemoteCommandError:
    return RemoteCommandError(
        result.command,
        result.exit_status,
        result.stdout,
        result.stderr,
        transient=result.exit_status not in _NOT_TRANSIENT_EXITS,
        problem=problem,
        cluster=cluster,
    )


def _check_paths(paths: Iterable[str]) -> list[str]:
    checked = list(dict.fromkeys(paths))
    for path in checked:
        if not path or "\0" in path:
            raise ValueError(f"bad path {path!r}")
    return checked


# ---------------------------------------------------------------------------- local


class LocalRunner:
    """Runs commands as subprocesses of this service and touches files directly."""

    def __init__(self, cluster: str = "local") -> None:
        self.cluster = cluster
        self.stats = RunnerStats()

    async def run(
        self,
        argv: Sequence[str],
        stdin: str | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        retry_lost: bool = False,
    ) -> CommandResult:
        """Run ``argv`` here (no shell). ``retry_lost`` exists for the protocol: no link to lose."""
        command = join_argv(argv)
        self.stats.commands_issued += 1
        try:
            # A session of its own, so a time-out can kill the command's whole process group.
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            missing = isinstance(exc, FileNotFoundError | PermissionError)
            raise RemoteCommandError(
                command,
                127 if missing else None,
                "",
                str(exc),
                transient=not missing,
                problem=f"cannot start: {exc}",
                cluster=self.cluster,
            ) from exc
        data = stdin.encode() if stdin is not None else None
        try:
            out, err = await asyncio.wait_for(proc.communicate(data), timeout)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise RemoteCommandError(
                command,
                None,
                "",
                "",
                transient=True,
                problem=f"timed out after {timeout:g} s",
                cluster=self.cluster,
            ) from None
        code = proc.returncode if proc.returncode is not None else -1
        result = CommandResult(
            command,
            code if code >= 0 else 128 - code,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )
        log.debug("cluster %s: %s -> exit %s", self.cluster, command, result.exit_status)
        if check and not result.ok:
            raise _failure(self.cluster, result)
        return result

    async def write_files(self, files: Mapping[str, str]) -> None:
        await asyncio.to_thread(self._write_all, dict(files))

    def _write_all(self, files: dict[str, str]) -> None:
        for path, text in files.items():
            target = Path(path)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, target)
            except OSError as exc:
                raise RemoteCommandError(
                    f"write {path}",
                    None,
                    "",
                    str(exc),
                    transient=False,
                    problem=f"cannot write file: {exc}",
                    cluster=self.cluster,
                ) from exc
            self.stats.files_written += 1

    async def read_files(self, paths: Iterable[str]) -> dict[str, str | None]:
        return await asyncio.to_thread(self._read_all, _check_paths(paths))

    def _read_all(self, paths: list[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for path in paths:
            try:
                found[path] = Path(path).read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                found[path] = None
            except OSError as exc:
                raise RemoteCommandError(
                    f"read {path}",
                    None,
                    "",
                    str(exc),
                    transient=False,
                    problem=f"cannot read file: {exc}",
                    cluster=self.cluster,
                ) from exc
            self.stats.files_read += 1
        return found

    async def close(self) -> None:
        return None

    def health(self) -> RunnerHealth:
        return RunnerHealth(self.cluster, HealthState.HEALTHY, connected=True)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------- SSH


class _Breaker:
    """Counts consecutive connection failures; opens for ``cooldown`` s after ``threshold``.

    While open, connecting fails fast. Once the cool-down has passed, one attempt goes
    through (half-open): success closes the breaker, failure opens it again.
    """

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float]) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.open_until: float | None = None
        self.last_error: str | None = None

    def retry_in(self) -> float | None:
        """Seconds until a new attempt is allowed, or None if attempts are allowed now."""
        if self.open_until is None:
            return None
        left = self.open_until - self.clock()
        return left if left > 0 else None

    def failure(self, error: str) -> bool:
        """Record a failure; True if this one opened the breaker."""
        self.failures += 1
        self.last_error = error
        if self.failures >= self.threshold:
            was_open = self.retry_in() is not None
            self.open_until = self.clock() + self.cooldown
            return not was_open
        return False

    def success(self) -> None:
        self.failures = 0
        self.open_until = None


class SSHRunner:
    """One shared asyncssh connection to a cluster; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        cluster: str,
        host: str,
        username: str,
        port: int = 22,
        key_file: str | None = None,
        known_hosts: str | None = None,
        insecure_skip_host_key_check: bool = False,
        max_channels: int = 4,
        connect_timeout: float = 15.0,
        keepalive_interval: float = 15.0,
        keepalive_count_max: int = 3,
        connect_attempts: int = 3,
        channel_open_attempts: int = 10,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= max_channels <= 9:
            raise ValueError("max_channels must be between 1 and 9 (OpenSSH allows 10)")
        self.cluster = cluster
        self.host = host
        self.port = port
        self.username = username
        self.key_file = key_file
        self.known_hosts = known_hosts
        self.insecure = insecure_skip_host_key_check
        self.max_channels = max_channels
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.connect_attempts = connect_attempts
        self.channel_open_attempts = channel_open_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stats = RunnerStats()
        self._breaker = _Breaker(breaker_threshold, breaker_cooldown, clock)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connect_lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(max_channels)
        self._lost_commands = 0
        if self.insecure:
            log.warning(
                "cluster %s: host key checking is OFF for %s:%s; a man in the middle would "
                "not be noticed",
                cluster,
                host,
                port,
            )

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig, **overrides: object) -> SSHRunner:
        """A runner for a configured remote cluster."""
        if cluster.host is None or cluster.user is None:
            raise ValueError(f"cluster {cluster.name} has no host/user to connect to")
        options: dict[str, object] = {
            "cluster": cluster.name,
            "host": cluster.host,
            "port": cluster.port,
            "username": cluster.user,
            "key_file": cluster.key_file,
            "known_hosts": cluster.known_hosts,
            "insecure_skip_host_key_check": cluster.insecure_skip_host_key_check,
            "max_channels": cluster.ssh_max_channels,
        }
        options.update(overrides)
        return cls(**options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"SSHRunner({self.cluster}: {self.username}@{self.host}:{self.port})"

    # -- connection ------------------------------------------------------------------------

    def _connect_options(self) -> dict[str, object]:
        options: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "config": None,  # the cluster YAML is the whole configuration
            "connect_timeout": self.connect_timeout,
            "login_timeout": self.connect_timeout,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": self.keepalive_count_max,
            "known_hosts": None if self.insecure else (self.known_hosts or ()),
        }
        if self.key_file:
            options["client_keys"] = [self.key_file]
            options["agent_path"] = None
        return options

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter (between half and all of the step)."""
        step = min(self.backoff_max, self.backoff_base * (2**attempt))
        return step * random.uniform(0.5, 1.0)

    async def _connection(self) -> asyncssh.SSHClientConnection:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            self._conn = None
            for attempt in range(self.connect_attempts):
                wait = self._breaker.retry_in()
                if wait is not None:
                    raise ClusterUnavailable(
                        self.cluster,
                        f"circuit open after {self._breaker.failures} connection failures; "
                        f"next attempt in {wait:.0f} s; last error: {self._breaker.last_error}",
                    )
                try:
                    conn = await asyncssh.connect(**self._connect_options())
                except (OSError, asyncssh.Error, TimeoutError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    self.stats.connection_failures += 1
                    opened = self._breaker.failure(error)
                    log.warning(
                        "cluster %s: connecting to %s@%s:%s failed (attempt %d/%d): %s",
                        self.cluster,
                        self.username,
                        self.host,
                        self.port,
                        attempt + 1,
                        self.connect_attempts,
                        error,
                    )
                    if opened:
                        log.error(
                            "cluster %s: circuit opened after %d failures; failing fast for %g s",
                            self.cluster,
                            self._breaker.failures,
                            self._breaker.cooldown,
                        )
                    # Wrong host keys and refused logins do not fix themselves in a second.
                    final = isinstance(
                        exc, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied
                    )
                    if final or attempt + 1 == self.connect_attempts:
                        raise ClusterUnavailable(self.cluster, f"cannot connect: {error}") from exc
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                self._breaker.success()
                self.stats.connections_opened += 1
                self._conn = conn
                log.info(
                    "cluster %s: connected to %s@%s:%s (connection #%d)",
                    self.cluster,
                    self.username,
                    self.host,
                    self.port,
                    self.stats.connections_opened,
                )
                return conn
        raise ClusterUnavailable(self.cluster, "cannot connect")  # pragma: no cover

    def _drop(self, conn: asyncssh.SSHClientConnection, error: str) -> None:
        """Forget a broken connection (the next call reconnects)."""
        if self._conn is conn:
            self._conn = None
            self._breaker.last_error = error
            log.warning("cluster %s: connection lost: %s", self.cluster, error)
        conn.abort()

    async def _with_channel(
        self,
        what: str,
        operation: Callable[[asyncssh.SSHClientConnection], Awaitable[T]],
        retry_lost: bool,
    ) -> T:
        """Run ``operation`` on the shared connection while holding one channel slot.

        A refused channel open is retried with backoff; so is a connection that turns out
        closed before the channel opened. A connection lost while the operation ran is retried
        only if ``retry_lost`` (the operation is safe to repeat).
        """
        refusals = 0
        losses = 0
        while True:
            conn = await self._connection()
            try:
                async with self._channels:
                    return await operation(conn)
            except asyncssh.ChannelOpenError as exc:
                if conn.is_closed():
                    self._drop(conn, f"closed before a channel opened: {exc}")
                    losses += 1
                    if losses > self.connect_attempts:
                        raise ClusterUnavailable(
                            self.cluster, f"{what}: connection keeps closing", what
                        ) from exc
                    continue
                refusals += 1
                self.stats.channel_open_retries += 1
                if refusals > self.channel_open_attempts:
                    raise ClusterUnavailable(
                        self.cluster, f"{what}: channel open refused {refusals} times: {exc}", what
                    ) from exc
                delay = min(1.0, 0.02 * (2**refusals)) * random.uniform(0.5, 1.0)
                log.debug(
                    "cluster %s: channel open refused (%s), retry %d in %.2f s",
                    self.cluster,
                    exc,
                    refusals,
                    delay,
                )
                await asyncio.sleep(delay)
            except (asyncssh.Error, ConnectionError) as exc:
                lost = isinstance(exc, _LOST) or conn.is_closed()
                if not lost:
                    # The server answered with an error (an SFTP permission problem, say).
                    raise RemoteCommandError(
                        what,
                        None,
                        "",
                        str(exc),
                        transient=False,
                        problem=f"{type(exc).__name__}: {exc}",
                        cluster=self.cluster,
                    ) from exc
                self._drop(conn, f"{type(exc).__name__}: {exc}")
                self._lost_commands += 1
                losses += 1
                if not retry_lost or losses > self.connect_attempts:
                    raise ClusterUnavailable(
                        self.cluster, f"connection lost during {what}: {exc}", what
                    ) from exc

    # -- commands ---------------------------------------------------------------------------

    async def run(
        self,
        argv: Sequence[str],
        stdin: str | None = None,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        retry_lost: bool = False,
    ) -> CommandResult:
        """Run ``argv`` on the cluster. ``retry_lost``: repeat it if the connection drops
        mid-command (only for commands safe to run twice, such as status queries).
        """
        command = join_argv(argv)
        self.stats.commands_issued += 1

        async def operation(conn: asyncssh.SSHClientConnection) -> CommandResult:
            redirect: dict[str, object] = (
                {"input": stdin} if stdin is not None else {"stdin": asyncssh.DEVNULL}
            )
            process = await conn.create_process(
                command, encoding="utf-8", errors="replace", **redirect
            )
            try:
                completed = await process.wait(check=False, timeout=timeout)
            except asyncssh.TimeoutError as exc:
                process.close()
                raise RemoteCommandError(
                    command,
                    None,
                    str(exc.stdout or ""),
                    str(exc.stderr or ""),
                    transient=True,
                    problem=f"timed out after {timeout:g} s",
                    cluster=self.cluster,
                ) from None
            return self._result(command, completed)

        result = await self._with_channel(command, operation, retry_lost)
        log.debug("cluster %s: %s -> exit %s", self.cluster, command, result.exit_status)
        if check and not result.ok:
            raise _failure(self.cluster, result)
        return result

    def _result(self, command: str, completed: asyncssh.SSHCompletedProcess) -> CommandResult:
        stdout = str(completed.stdout or "")
        stderr = str(completed.stderr or "")
        if completed.exit_signal:
            name = completed.exit_signal[0]
            try:
                number = signal.Signals[f"SIG{name}"].value
            except KeyError:
                number = 127
            return CommandResult(command, 128 + number, stdout, stderr)
        if completed.exit_status is None:
            # The channel closed without an exit status: the link or sshd went away.
            raise asyncssh.ConnectionLost("channel closed without an exit status")
        return CommandResult(command, completed.exit_status, stdout, stderr)

    # -- files ------------------------------------------------------------------------------

    async def write_files(self, files: Mapping[str, str]) -> None:
        """Write all ``files`` (path -> text) over one SFTP session, each atomically."""
        batch = dict(files)
        if not batch:
            return
        _check_paths(batch)

        async def operation(conn: asyncssh.SSHClientConnection) -> None:
            async with conn.start_sftp_client() as sftp:
                await _sftp_write(sftp, batch)

        await self._with_channel(f"write {len(batch)} file(s)", operation, retry_lost=True)
        self.stats.files_written += len(batch)
        log.debug("cluster %s: wrote %d file(s)", self.cluster, len(batch))

    async def read_files(self, paths: Iterable[str]) -> dict[str, str | None]:
        """Read all ``paths`` over one SFTP session; a missing file reads as None."""
        wanted = _check_paths(paths)
        if not wanted:
            return {}

        async def operation(conn: asyncssh.SSHClientConnection) -> dict[str, str | None]:
            async with conn.start_sftp_client() as sftp:
                return await _sftp_read(sftp, wanted)

        found = await self._with_channel(f"read {len(wanted)} file(s)", operation, True)
        self.stats.files_read += len(wanted)
        return found

    # -- lifecycle and health ---------------------------------------------------------------

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()
            log.info("cluster %s: connection closed", self.cluster)

    def health(self) -> RunnerHealth:
        retry_in = self._breaker.retry_in()
        connected = self._conn is not None and not self._conn.is_closed()
        if retry_in is not None:
            state = HealthState.UNHEALTHY
        elif self._breaker.failures or (self._lost_commands and not connected):
            state = HealthState.DEGRADED
        else:
            state = HealthState.HEALTHY
        return RunnerHealth(
            cluster=self.cluster,
            state=state,
            last_error=self._breaker.last_error,
            consecutive_failures=self._breaker.failures,
            retry_in=retry_in,
            connected=connected,
        )


async def _sftp_write(sftp: asyncssh.SFTPClient, files: dict[str, str]) -> None:
    limit = asyncio.Semaphore(_SFTP_PARALLEL)
    directories = sorted({posixpath.dirname(path) for path in files} - {"", "/"})

    async def make_dir(directory: str) -> None:
        async with limit:
            await sftp.makedirs(directory, exist_ok=True)

    # Parents first, then their children, so that concurrent makedirs never race.
    by_depth: dict[int, list[str]] = {}
    for directory in directories:
        by_depth.setdefault(directory.count("/"), []).append(directory)
    for depth in sorted(by_depth):
        await asyncio.gather(*(make_dir(d) for d in by_depth[depth]))

    async def put(path: str, text: str) -> None:
        tmp = posixpath.join(
            posixpath.dirname(path), f".{posixpath.basename(path)}.tmp-{secrets.token_hex(4)}"
        )
        async with limit:
            async with sftp.open(tmp, "w", encoding="utf-8") as handle:
                await handle.write(text)
            try:
                await sftp.posix_rename(tmp, path)
            except asyncssh.SFTPOpUnsupported:
                await sftp.rename(tmp, path, flags=asyncssh.FXR_OVERWRITE)

    await asyncio.gather(*(put(path, text) for path, text in files.items()))


async def _sftp_read(sftp: asyncssh.SFTPClient, paths: list[str]) -> dict[str, str | None]:
    limit = asyncio.Semaphore(_SFTP_PARALLEL)

    async def get(path: str) -> str | None:
        async with limit:
            try:
                async with sftp.open(path, "r", encoding="utf-8", errors="replace") as handle:
                    return str(await handle.read())
            except asyncssh.SFTPNoSuchFile:
                return None

    texts = await asyncio.gather(*(get(path) for path in paths))
    return dict(zip(paths, texts, strict=True))


# ---------------------------------------------------------------------------- pool


def runner_for_cluster(cluster: ClusterConfig) -> CommandRunner:
    """LocalRunner for a cluster without host, SSHRunner otherwise."""
    if cluster.is_remote:
        return SSHRunner.from_cluster(cluster)
    return LocalRunner(cluster.name)


@dataclass
class RunnerPool:
    """One runner per (cluster name, user), created on first use and shared afterwards."""

    factory: Callable[[ClusterConfig], CommandRunner] = runner_for_cluster
    _runners: dict[tuple[str, str | None], CommandRunner] = field(default_factory=dict)

    def get(self, cluster: ClusterConfig) -> CommandRunner:
        key = (cluster.name, cluster.user)
        runner = self._runners.get(key)
        if runner is None:
            runner = self._runners[key] = self.factory(cluster)
        return runner

    def runners(self) -> dict[tuple[str, str | None], CommandRunner]:
        return dict(self._runners)

    def health(self) -> dict[str, RunnerHealth]:
        return {runner.cluster: runner.health() for runner in self._runners.values()}

    def stats(self) -> dict[str, RunnerStats]:
        return {runner.cluster: runner.stats for runner in self._runners.values()}

    async def close(self) -> None:
        runners, self._runners = list(self._runners.values()), {}
        for runner in runners:
            await runner.close()
