"""``airavata``: the researcher's command line. It talks only to the REST API (``/api/v1``).

Settings come from, lowest to highest precedence: the config file
(``$XDG_CONFIG_HOME/airavata/config.yaml``, else ``~/.config/airavata/config.yaml``), the
environment (``AIRAVATA_SERVER``, ``AIRAVATA_TOKEN`` sent as a Bearer token,
``AIRAVATA_API_KEY`` sent as ``X-API-Key``), then the ``--server``/``--token``/``--api-key``
options, given before or after the command name.

Exit codes: 0 success; 1 the watched experiment ended FAILED or CANCELLED; 2 an error, told in
one line that says what to do; 130 watching interrupted (the experiment keeps running).
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from airavata_hpc import __version__
from airavata_hpc.states import ExperimentStatus, TaskStatus
from airavata_hpc.sweep import Sweep, SweepError, load_sweep

DEFAULT_SERVER = "http://127.0.0.1:8080"
API_PREFIX = "/api/v1"
TIMEOUT_SECONDS = 30.0
PAGE = 100  # the API's largest page
# How long `watch` keeps polling through an unreachable server before giving up.
WATCH_OUTAGE_SECONDS = 60.0
TOKEN_HINT = (
    "create a token with `airavata-hpc token create --user NAME` and run "
    "`airavata config set --token TOKEN` (or set AIRAVATA_TOKEN)"
)
SERVER_HINT = "is it running? set AIRAVATA_SERVER or run `airavata config set --server URL`"
# Order in which task counts are shown: finished first, then the work still ahead.
STATUS_ORDER = [
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
    TaskStatus.RUNNING,
    TaskStatus.STAGING,
    TaskStatus.QUEUED,
    TaskStatus.ASSIGNED,
    TaskStatus.PENDING,
    TaskStatus.CREATED,
    TaskStatus.ARCHIVED,
]


class CliError(click.ClickException):
    """A failure shown to the user as one line (``Error: ...``) with exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class Unreachable(CliError):
    """The server did not answer at all (refused, unresolvable, timed out)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------
# Settings


def config_path() -> Path:
    """Where ``airavata config set`` keeps its settings (honours ``XDG_CONFIG_HOME``)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "airavata" / "config.yaml"


def read_config(path: Path | None = None) -> dict[str, str]:
    """The config file's settings; an absent file is empty, a broken one is an error."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror} — fix its permissions") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CliError(
            f"{path} is not valid YAML ({_one_line(str(exc))}) — fix it or run "
            "`airavata config set` again"
        ) from None
    if not isinstance(data, dict):
        raise CliError(f"{path} must hold a mapping (server: URL, token: ...)")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(
            f"warning: {path} holds credentials but others can read it; chmod 600 it", err=True
        )
    return {str(key): str(value) for key, value in data.items() if value is not None}


def write_config(settings: dict[str, str], path: Path | None = None) -> Path:
    """Write the settings, readable by the owner only (directory 700, file 600)."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = yaml.safe_dump(settings, default_flow_style=False, sort_keys=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
    return path


def normalize_server(url: str) -> str:
    """``http://host:port`` without a trailing slash or ``/api/v1``."""
    url = url.strip().rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)]
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(f"server URL {url!r} must look like http://HOST:PORT")
    return url


@dataclass
class Connection:
    """The effective server and credentials, with where each came from."""

    server: str
    token: str | None = None
    api_key: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        """The credential of highest precedence; a token wins a tie with an API key."""
        rank = {"option": 3, "environment": 2, "config file": 1}
        token_rank = rank.get(self.sources.get("token", ""), 0) if self.token else -1
        key_rank = rank.get(self.sources.get("api_key", ""), 0) if self.api_key else -1
        if token_rank >= 0 and token_rank >= key_rank:
            return {"Authorization": f"Bearer {self.token}"}
        if key_rank >= 0:
            return {"X-API-Key": str(self.api_key)}
        return {}


def resolve_connection(options: dict[str, Any]) -> Connection:
    """Options over environment over config file over the default server."""
    stored = read_config()
    environment = {
        "server": os.environ.get("AIRAVATA_SERVER"),
        "token": os.environ.get("AIRAVATA_TOKEN"),
        "api_key": os.environ.get("AIRAVATA_API_KEY"),
    }
    values: dict[str, str | None] = {"server": DEFAULT_SERVER, "token": None, "api_key": None}
    sources = {"server": "default"}
    for name in values:
        for source, layer in (
            ("config file", stored),
            ("environment", environment),
            ("option", options),
        ):
            if layer.get(name):
                values[name] = layer[name]
                sources[name] = source
    return Connection(
        server=normalize_server(str(values["server"])),
        token=values["token"],
        api_key=values["api_key"],
        sources=sources,
    )


# ---------------------------------------------------------------------------------------------
# HTTP


class Api:
    """JSON over HTTP with the standard library; every failure becomes a :class:`CliError`
    whose message says what to do."""

    def __init__(self, connection: Connection, timeout: float = TIMEOUT_SECONDS) -> None:
        self.connection = connection
        self.base = connection.server + API_PREFIX
        self.timeout = timeout

    def get(self, path: str, query: dict[str, Any] | None = None, missing: str = "") -> Any:
        return self.request("GET", path, query=query, missing=missing)

    def post(self, path: str, body: Any = None, missing: str = "") -> Any:
        return self.request("POST", path, body=body, missing=missing)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        missing: str = "",
    ) -> Any:
        """Send one request; ``missing`` is the message for a 404."""
        url = self.base + path
        params = {key: value for key, value in (query or {}).items() if value is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {
            "Accept": "application/json",
            "User-Agent": f"airavata-cli/{__version__}",
            **self.connection.headers(),
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc.code, exc.read(), missing) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise CliError(
                f"the server at {self.connection.server} did not answer with JSON — is "
                "that the airavata-hpc server? check the URL with `airavata config show`"
            ) from None

    def _unreachable(self, exc: BaseException) -> Unreachable:
        reason: Any = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            text = f"no answer within {self.timeout:g} s"
        elif isinstance(reason, OSError) and reason.strerror:
            text = reason.strerror
        else:
            text = str(reason)
        return Unreachable(
            f"cannot reach the server at {self.connection.server}: {text} — " + SERVER_HINT
        )

    def _http_error(self, status: int, raw: bytes, missing: str) -> CliError:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict) or "message" not in body:
            return CliError(
                f"the server at {self.connection.server} answered HTTP {status} without an "
                "API error body — is that the airavata-hpc server? check `airavata config show`"
            )
        message = _one_line(body.get("message", ""))
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        if status == 401:
            return CliError(
                f"the server at {self.connection.server} refused the credentials "
                f"({message}) — {TOKEN_HINT}"
            )
        if status == 403:
            return CliError(f"not allowed: {message}")
        if status == 404:
            return CliError(missing or f"not found: {message}")
        if status in (400, 422):
            fieldname = details.get("field")
            if fieldname and str(fieldname) not in message:
                message += f" (field {fieldname})"
            return CliError(f"the server rejected the request: {message}")
        if status == 409:
            return CliError(message)
        request_id = body.get("request_id", "?")
        return CliError(
            f"the server failed (HTTP {status}): {message} — quote request id "
            f"{request_id} to its administrator"
        )


def no_experiment(experiment_id: str) -> str:
    return (
        f"no experiment {experiment_id} (or it belongs to another user) — list yours with "
        "`airavata list`"
    )


# ---------------------------------------------------------------------------------------------
# Output helpers


def table(headers: list[str] | None, rows: Iterable[list[Any]]) -> str:
    """Left-aligned columns separated by two spaces; empty cells show as ``-``. Without
    ``headers`` the rows are a list of ``name  value`` pairs."""
    cells = [[("-" if cell is None or cell == "" else str(cell)) for cell in row] for row in rows]
    columns = len(headers) if headers else max((len(row) for row in cells), default=0)
    widths = [len(header) for header in headers] if headers else [0] * columns
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [headers, *cells] if headers else cells
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def shorten(text: Any, width: int) -> str:
    """First line of ``text``, cut to ``width`` characters with an ellipsis."""
    if text is None:
        return ""
    lines = str(text).strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def when(timestamp: str | None) -> str:
    """``2026-01-31T12:00:05.123Z`` as ``2026-01-31 12:00:05``."""
    return timestamp[:19].replace("T", " ") if timestamp else ""


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def task_location(task: dict[str, Any]) -> str:
    """``cluster/job`` of the task's latest attempt, or just the cluster."""
    if task.get("assigned_worker_id"):
        return str(task["assigned_worker_id"])
    attempts = task.get("worker_assignment_history") or []
    if attempts and isinstance(attempts[-1], dict):
        latest = attempts[-1]
        job = latest.get("native_job_id")
        return f"{latest.get('cluster', '?')}/{job}" if job else str(latest.get("cluster", ""))
    return ""


def set_id(task: dict[str, Any]) -> str:
    return str((task.get("metadata") or {}).get("parameter_set_id") or task.get("name", ""))


def progress_line(progress: dict[str, Any], counts: dict[str, int], width: int = 30) -> str:
    """One line: a bar, the percentage, the experiment status and the task counts."""
    try:
        percent = min(max(float(progress.get("progress_percentage") or 0.0), 0.0), 100.0)
    except (TypeError, ValueError):
        percent = 0.0
    filled = round(width * percent / 100)
    bar = "#" * filled + "." * (width - filled)
    parts = [f"{status.lower()} {counts[status]}" for status in STATUS_ORDER if counts.get(status)]
    parts += [
        f"{name.lower()} {n}"
        for name, n in sorted(counts.items())
        if n and name not in STATUS_ORDER
    ]
    line = f"[{bar}] {percent:5.1f}%  {progress.get('status', '?')}"
    if parts:
        line += "  " + ", ".join(parts)
    if progress.get("estimated_completion"):
        line += f"  (done ~{when(progress['estimated_completion'])[11:]} UTC)"
    return line


# ---------------------------------------------------------------------------------------------
# Common options


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value is not False:
        ctx.ensure_object(dict)[param.name] = value
    return value


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--server``, ``--token``, ``--api-key`` and ``--json``, accepted before or after the
    command name."""
    options = [
        click.option(
            "--server",
            metavar="URL",
            expose_value=False,
            callback=_remember,
            help="Server URL, e.g. http://HOST:8080. Default: $AIRAVATA_SERVER, "
            "else the config file.",
        ),
        click.option(
            "--token",
            metavar="TOKEN",
            expose_value=False,
            callback=_remember,
            help="Bearer token. Default: $AIRAVATA_TOKEN, else the config file.",
        ),
        click.option(
            "--api-key",
            metavar="KEY",
            expose_value=False,
            callback=_remember,
            help="API key (X-API-Key). Default: $AIRAVATA_API_KEY.",
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Print JSON instead of tables.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _settings(ctx: click.Context) -> dict[str, Any]:
    return ctx.find_root().ensure_object(dict)


def _api(ctx: click.Context) -> Api:
    return Api(resolve_connection(_settings(ctx)))


def _json_wanted(ctx: click.Context) -> bool:
    return bool(_settings(ctx).get("as_json"))


class _Group(click.Group):
    """Lists commands in the order they are defined rather than alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="airavata")
@common_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run parameter sweeps on HPC clusters through an airavata-hpc server.

    Start with `airavata config set --server URL --token TOKEN`, write a sweep file (see the
    examples shipped in airavata_hpc/examples/), check it with `airavata submit FILE
    --dry-run`, then submit it and `airavata watch ID`.
    """
    ctx.ensure_object(dict)


# ---------------------------------------------------------------------------------------------
# submit


interval_option = click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Seconds between progress polls.",
)


@main.command()
@click.argument("sweep_file", metavar="SWEEP.yaml", type=click.Path(dir_okay=False))
@click.option("--watch", "follow", is_flag=True, help="Follow the experiment until it ends.")
@click.option(
    "--dry-run", is_flag=True, help="Check the file and show the first commands; send nothing."
)
@click.option(
    "--show",
    default=5,
    show_default=True,
    metavar="N",
    type=click.IntRange(min=0),
    help="Commands shown by --dry-run.",
)
@interval_option
@common_options
@click.pass_context
def submit(
    ctx: click.Context, sweep_file: str, follow: bool, dry_run: bool, show: int, interval: float
) -> None:
    """Create an experiment from a sweep file and submit it; prints the experiment id."""
    try:
        sweep = load_sweep(sweep_file)
    except SweepError as exc:
        raise CliError(str(exc)) from None
    for warning in sweep.warnings:
        click.echo(f"warning: {sweep.source}, {warning}", err=True)
    if dry_run:
        _dry_run(ctx, sweep, show)
        return

    api = _api(ctx)
    created = api.post("/experiments", sweep.body)
    experiment_id = created["id"]
    try:
        submitted = api.post(
            f"/experiments/{experiment_id}/submit", missing=no_experiment(experiment_id)
        )
    except CliError as exc:
        raise CliError(
            f"experiment {experiment_id} was created but not submitted: {exc.message} — it "
            f"stays CREATED; remove it with `airavata cancel {experiment_id}`"
        ) from None
    if _json_wanted(ctx):
        echo_json(submitted)
    else:
        click.echo(experiment_id)
        click.echo(
            f"submitted {submitted['name']!r}: {sweep.count} task(s) — follow it with "
            f"`airavata watch {experiment_id}`",
            err=True,
        )
    if follow:
        ctx.exit(_watch(api, experiment_id, interval))


def _dry_run(ctx: click.Context, sweep: Sweep, show: int) -> None:
    if _json_wanted(ctx):
        echo_json(sweep.body)
        return
    body = sweep.body
    click.echo(
        f"{sweep.source}: experiment {body['name']!r} in project "
        f"{body['project_id']!r}, {sweep.count} parameter set(s)"
    )
    names: dict[str, set[str]] = {}
    for parameter_set in body.get("parameters") or []:
        for name, value in parameter_set["values"].items():
            names.setdefault(name, set()).add(value)
    if names:
        click.echo(
            "parameters: "
            + ", ".join(f"{name} ({len(values)} value(s))" for name, values in names.items())
        )
    commands = sweep.commands(show)
    if commands:
        click.echo(f"first {len(commands)} command(s):")
        click.echo(table(["SET", "COMMAND"], [[set_id_, command] for set_id_, command in commands]))
    click.echo("nothing was sent (--dry-run)")


# ---------------------------------------------------------------------------------------------
# list, status


STATUS_CHOICE = click.Choice([status.value for status in ExperimentStatus], case_sensitive=False)
TASK_STATUS_CHOICE = click.Choice([status.value for status in TaskStatus], case_sensitive=False)


@main.command("list")
@click.option("--status", type=STATUS_CHOICE, help="Only experiments with this status.")
@click.option("--project", metavar="PROJECT", help="Only experiments of this project.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, PAGE))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
@common_options
@click.pass_context
def list_(
    ctx: click.Context, status: str | None, project: str | None, limit: int, offset: int
) -> None:
    """Your experiments, newest first."""
    page = _api(ctx).get(
        "/experiments",
        {
            "status": status.upper() if status else None,
            "project_id": project,
            "limit": limit,
            "offset": offset,
        },
    )
    if _json_wanted(ctx):
        echo_json(page)
        return
    experiments = page.get("experiments") or []
    if not experiments:
        click.echo(
            "no experiments"
            + (
                " match"
                if status or project
                else " yet; submit one with `airavata submit SWEEP.yaml`"
            )
        )
        return
    click.echo(
        table(
            ["ID", "NAME", "PROJECT", "STATUS", "TASKS", "CREATED"],
            [
                [
                    e["id"],
                    shorten(e.get("name"), 40),
                    e.get("project_id"),
                    e.get("status"),
                    (e.get("execution_summary") or {}).get("total_tasks", "-"),
                    when(e.get("created_at")),
                ]
                for e in experiments
            ],
        )
    )
    total = page.get("total", len(experiments))
    if total > offset + len(experiments) or offset:
        click.echo(
            f"({offset + 1}-{offset + len(experiments)} of {total}; page with --limit and --offset)"
        )


def fetch_tasks(
    api: Api, experiment_id: str, limit: int, status: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` tasks in parameter-set order, and how many there are in all."""
    tasks: list[dict[str, Any]] = []
    total = 0
    while len(tasks) < limit:
        page = api.get(
            f"/experiments/{experiment_id}/tasks",
            {"status": status, "limit": min(PAGE, limit - len(tasks)), "offset": len(tasks)},
            missing=no_experiment(experiment_id),
        )
        batch = page.get("tasks") or []
        total = int(page.get("total", 0))
        tasks.extend(batch)
        if not batch or len(tasks) >= total:
            break
    return tasks, total


def task_counts(api: Api, experiment_id: str) -> dict[str, int]:
    """Tasks per status: from the summary when it carries them, else one count per status."""
    missing = no_experiment(experiment_id)
    summary = api.get(f"/experiments/{experiment_id}/summary", missing=missing)
    by_status = ((summary or {}).get("resource_usage") or {}).get("tasks_by_status")
    if isinstance(by_status, dict):
        return {str(key): int(value) for key, value in by_status.items() if value}
    counts = {}
    for status in STATUS_ORDER:
        page = api.get(
            f"/experiments/{experiment_id}/tasks",
            {"status": status.value, "limit": 1},
            missing=missing,
        )
        if page.get("total"):
            counts[status.value] = int(page["total"])
    return counts


def counts_text(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = [f"{counts[status]} {status.lower()}" for status in STATUS_ORDER if counts.get(status)]
    return f"{total} task(s)" + (": " + ", ".join(parts) if parts else "")


@main.command()
@click.argument("experiment_id", metavar="ID")
@click.option("--task-status", type=TASK_STATUS_CHOICE, help="Only tasks with this status.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Most tasks listed."
)
@common_options
@click.pass_context
def status(ctx: click.Context, experiment_id: str, task_status: str | None, limit: int) -> None:
    """An experiment and a table of its tasks."""
    api = _api(ctx)
    missing = no_experiment(experiment_id)
    experiment = api.get(f"/experiments/{experiment_id}", missing=missing)
    wanted = task_status.upper() if task_status else None
    tasks, total = fetch_tasks(api, experiment_id, limit, wanted)
    counts = task_counts(api, experiment_id)
    if _json_wanted(ctx):
        echo_json(
            {"experiment": experiment, "task_counts": counts, "tasks": tasks, "total_tasks": total}
        )
        return
    click.echo(
        table(
            None,
            [
                ["experiment", f"{experiment['id']}  {experiment.get('name', '')}"],
                ["status", experiment.get("status")],
                ["project", experiment.get("project_id")],
                ["owner", experiment.get("owner_id")],
                ["created", when(experiment.get("created_at"))],
                ["updated", when(experiment.get("updated_at"))],
                ["tasks", counts_text(counts)],
                ["command", shorten(experiment.get("command_template"), 80)],
            ],
        )
    )
    if not tasks:
        click.echo("\nno tasks" + (f" with status {wanted}" if wanted else ""))
        return
    click.echo()
    click.echo(
        table(
            ["SET", "STATUS", "CLUSTER/JOB", "EXIT", "RETRIES", "ERROR"],
            [
                [
                    set_id(t),
                    t.get("status"),
                    task_location(t),
                    t.get("exit_code"),
                    t.get("retry_count") or None,
                    shorten(t.get("error_message"), 60),
                ]
                for t in tasks
            ],
        )
    )
    if total > len(tasks):
        click.echo(f"({len(tasks)} of {total} tasks shown; use --limit or --task-status)")


# ---------------------------------------------------------------------------------------------
# watch


@main.command()
@click.argument("experiment_id", metavar="ID")
@interval_option
@common_options
@click.pass_context
def watch(ctx: click.Context, experiment_id: str, interval: float) -> None:
    """Follow an experiment's progress until it ends (Ctrl-C stops watching, not the
    experiment). Exits 0 when it COMPLETED, 1 when it FAILED or was CANCELLED."""
    ctx.exit(_watch(_api(ctx), experiment_id, interval))


def _watch(api: Api, experiment_id: str, interval: float) -> int:
    live = sys.stdout.isatty()
    try:
        return _follow(api, experiment_id, interval, live)
    except KeyboardInterrupt:
        if live:
            click.echo()
        click.echo(
            f"stopped watching; experiment {experiment_id} keeps running on the "
            f"server (`airavata watch {experiment_id}` to resume, `airavata cancel "
            f"{experiment_id}` to stop it)",
            err=True,
        )
        return 130


def _follow(api: Api, experiment_id: str, interval: float, live: bool) -> int:
    """Poll until the experiment is final. Once the server has answered, an outage of up to
    ``WATCH_OUTAGE_SECONDS`` is waited out (a restarting server should not end the watch)."""
    missing = no_experiment(experiment_id)
    last_line = ""
    outage_started: float | None = None
    while True:
        try:
            progress = api.get(f"/experiments/{experiment_id}/progress", missing=missing)
            counts = task_counts(api, experiment_id)
        except Unreachable as exc:
            now = time.monotonic()
            if not last_line or (
                outage_started is not None and now - outage_started >= WATCH_OUTAGE_SECONDS
            ):
                raise
            if outage_started is None:
                outage_started = now
                click.echo(
                    ("\n" if live else "") + "server unreachable; retrying for up to "
                    f"{WATCH_OUTAGE_SECONDS:g} s ({exc.message})",
                    err=True,
                )
            time.sleep(interval)
            continue
        outage_started = None
        line = progress_line(progress, counts)
        if live:
            click.echo("\r" + line + "\x1b[K", nl=False)
        elif line != last_line:
            click.echo(line)
        state = str(progress.get("status", ""))
        if state == ExperimentStatus.CREATED and not last_line:
            click.echo(
                ("\n" if live else "") + f"note: experiment {experiment_id} is not submitted "
                "yet; nothing runs until it is",
                err=True,
            )
        last_line = line
        if state in ExperimentStatus.__members__ and ExperimentStatus(state).is_final:
            if live:
                click.echo()
            return _final_report(experiment_id, state, counts)
        time.sleep(interval)


def _final_report(experiment_id: str, state: str, counts: dict[str, int]) -> int:
    click.echo(f"experiment {experiment_id} {state}: {counts_text(counts)}")
    if state in (ExperimentStatus.FAILED, ExperimentStatus.CANCELLED):
        if counts.get(TaskStatus.FAILED):
            click.echo(
                f"see the failed tasks with `airavata status {experiment_id} --task-status FAILED`",
                err=True,
            )
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# cancel, results


@main.command()
@click.argument("experiment_id", metavar="ID")
@common_options
@click.pass_context
def cancel(ctx: click.Context, experiment_id: str) -> None:
    """Cancel an experiment: its unfinished tasks stop and their cluster jobs are cancelled."""
    experiment = _api(ctx).post(
        f"/experiments/{experiment_id}/cancel", missing=no_experiment(experiment_id)
    )
    if _json_wanted(ctx):
        echo_json(experiment)
    else:
        click.echo(f"experiment {experiment_id} is {experiment.get('status', 'CANCELLED')}")


@main.command()
@click.argument("experiment_id", metavar="ID")
@click.option(
    "--limit", default=10, show_default=True, type=click.IntRange(min=1), help="Most tasks shown."
)
@click.option(
    "--task-status", type=TASK_STATUS_CHOICE, help="Only tasks with this status, e.g. COMPLETED."
)
@click.option(
    "--lines",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Last lines of output shown per task.",
)
@common_options
@click.pass_context
def results(
    ctx: click.Context, experiment_id: str, limit: int, task_status: str | None, lines: int
) -> None:
    """Results of an experiment's tasks: parameters, exit code and the end of the output."""
    api = _api(ctx)
    wanted = task_status.upper() if task_status else None
    tasks, total = fetch_tasks(api, experiment_id, limit, wanted)
    if _json_wanted(ctx):
        echo_json(
            {
                "experiment_id": experiment_id,
                "total_tasks": total,
                "tasks": [
                    {
                        key: task.get(key)
                        for key in (
                            "id",
                            "status",
                            "exit_code",
                            "result_summary",
                            "error_message",
                            "output_path",
                        )
                    }
                    | {
                        "parameter_set_id": set_id(task),
                        "parameters": (task.get("metadata") or {}).get("parameters", {}),
                    }
                    for task in tasks
                ],
            }
        )
        return
    if not tasks:
        click.echo("no tasks" + (f" with status {wanted}" if wanted else ""))
        return
    for task in tasks:
        click.echo(_result_header(task))
        for line in _result_lines(task, lines):
            click.echo("    " + line)
    if total > len(tasks):
        click.echo(f"({len(tasks)} of {total} tasks shown; use --limit or --task-status)")


def _result_header(task: dict[str, Any]) -> str:
    values = (task.get("metadata") or {}).get("parameters") or {}
    parts = [set_id(task), str(task.get("status", "?"))]
    if task.get("exit_code") is not None:
        parts.append(f"exit {task['exit_code']}")
    if values:
        parts.append(" ".join(f"{name}={value}" for name, value in values.items()))
    return "  ".join(parts)


def _result_lines(task: dict[str, Any], lines: int) -> list[str]:
    """The task's result_summary: output tails as their last lines, other fields as
    ``key: value``; the error when there is no result; a note when nothing is known yet."""
    summary = task.get("result_summary")
    shown: list[str] = []
    if isinstance(summary, dict):
        for key, value in summary.items():
            if key == "exit_code" and value == task.get("exit_code"):
                continue  # already in the header line
            if isinstance(value, str) and ("stdout" in key or "stderr" in key or "output" in key):
                tail = value.rstrip("\n").splitlines()[-lines:]
                shown.append(f"{key}:")
                shown.extend(f"| {line}" for line in tail)
            elif isinstance(value, dict | list):
                shown.append(f"{key}: {shorten(json.dumps(value, sort_keys=True), 100)}")
            else:
                shown.append(f"{key}: {shorten(value, 100)}")
    elif summary is not None:
        shown.append(f"result: {shorten(json.dumps(summary), 100)}")
    if task.get("error_message"):
        shown.append(f"error: {shorten(task['error_message'], 100)}")
    if not shown:
        shown.append(
            "(no result yet)"
            if task.get("status") not in [s.value for s in TaskStatus if s.is_final]
            else "(no result recorded)"
        )
    return shown


# ---------------------------------------------------------------------------------------------
# config


@main.group()
def config() -> None:
    """The server and credentials this command uses (kept in the config file)."""


@config.command("set")
@click.option("--server", metavar="URL", help="Server URL, e.g. http://login1:8080.")
@click.option(
    "--token", metavar="TOKEN", help="Bearer token from `airavata-hpc token create`; '' removes it."
)
@click.option("--api-key", metavar="KEY", help="API key (X-API-Key); '' removes it.")
def config_set(server: str | None, token: str | None, api_key: str | None) -> None:
    """Save settings to the config file (created readable by you only)."""
    if server is None and token is None and api_key is None:
        raise click.UsageError("give at least one of --server, --token, --api-key")
    settings = read_config()
    if server is not None:
        settings["server"] = normalize_server(server)
    for name, value in (("token", token), ("api_key", api_key)):
        if value == "":
            settings.pop(name, None)
        elif value is not None:
            settings[name] = value.strip()
    path = write_config(settings)
    click.echo(f"saved {path}")


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """The effective settings and where each comes from (secrets masked)."""
    connection = resolve_connection(_settings(ctx))
    path = config_path()
    rows = {
        "config_file": str(path) + ("" if path.exists() else " (not created yet)"),
        "server": connection.server,
        "server_source": connection.sources.get("server"),
        "token": mask(connection.token),
        "token_source": connection.sources.get("token") if connection.token else None,
        "api_key": mask(connection.api_key),
        "api_key_source": connection.sources.get("api_key") if connection.api_key else None,
    }
    if as_json or _json_wanted(ctx):
        echo_json(rows)
        return

    def with_source(value: str | None, name: str) -> str | None:
        return f"{value}  ({rows[name + '_source']})" if value else None

    click.echo(
        table(
            None,
            [
                ["config file", rows["config_file"]],
                ["server", with_source(rows["server"], "server")],
                ["token", with_source(rows["token"], "token")],
                ["api key", with_source(rows["api_key"], "api_key")],
            ],
        )
    )


def mask(secret: str | None) -> str | None:
    """Enough of a secret to recognise it, not to use it."""
    if not secret:
        return None
    return secret[:6] + "…" + secret[-4:] if len(secret) > 16 else "****"


if __name__ == "__main__":
    main(prog_name="airavata")
