"""Throughput and latency of the experiments API next to two bare Tornado handlers.

The service runs the way it does in production: one server process, one IOLoop, one database
connection, started here with :func:`airavata_hpc.server.prepare` and
:func:`airavata_hpc.web.app.make_app` (without the execution engine). In that server process
only, a few routes are added to the same Tornado application, after the API's routes:

* ``GET /_bench/constant``: a constant JSON body, the floor of Tornado + HTTP;
* ``GET /_bench/lookup/{id}``: one ``Experiment.get_by_id`` on the same database connection,
  the floor of any endpoint that reads one experiment;
* ``GET /_bench/cpu`` and ``POST /_bench/profile/{start,stop}``: the server's CPU time and an
  optional cProfile of it, for the benchmark's own use.

Load comes from this process: a fixed number of keep-alive HTTP/1.1 connections, each a closed
loop (send a request, read the whole answer, send the next) on a small asyncio client over raw
sockets. It costs a fraction of the server's CPU per request, so one client process saturates
one server process on a two-core machine (the table shows both processes' CPU use). Each GET
endpoint is warmed up, then measured in interleaved rounds so that a noisy moment of the
machine is shared out; POST is measured last, one create at a time. The script prints figures
and whether the targets are met; its exit status never depends on timing.

    /work/venv/bin/python bench/api.py                      # SQLite and PostgreSQL, ~1 min
    /work/venv/bin/python bench/api.py --database sqlite --seconds 2
    /work/venv/bin/python bench/api.py --profile            # plus a cProfile of the server
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import json
import logging
import math
import multiprocessing
import os
import platform
import pstats
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import peewee
import tornado
import tornado.httpserver
import tornado.netutil
import tornado.web
from playhouse.db_url import connect

from airavata_hpc import auth
from airavata_hpc.db import database
from airavata_hpc.models import Experiment
from airavata_hpc.server import prepare
from airavata_hpc.settings import Settings
from airavata_hpc.web.app import make_app

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_SCHEMA = "bench_api"
READER = "bench-reader"  # owns the seeded experiments that the GET endpoints read
WRITER = "bench-writer"  # owns what the POST benchmark creates, so the list never sees it
SEEDED = 120
SEED_SETS = 5
CREATE_SETS = 1000
TARGET_GET_RATIO = 0.8
TARGET_CREATE_MS = 250.0
CONSTANT_BODY = b'{"status":"ok"}'


# ---------------------------------------------------------------------------------------------
# The server process


class _BenchHandler(tornado.web.RequestHandler):
    """A bare handler: no request id, authentication, metrics or error bodies."""

    def send(self, body: bytes) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(body)


class ConstantHandler(_BenchHandler):
    def get(self) -> None:
        self.send(CONSTANT_BODY)


class LookupHandler(_BenchHandler):
    def get(self, experiment_id: str) -> None:
        row = Experiment.get_by_id(experiment_id)
        self.send(json.dumps({"id": row.id, "name": row.name}).encode())


class CpuHandler(_BenchHandler):
    """The server process's CPU seconds so far, to show whether a phase saturated it."""

    def get(self) -> None:
        self.send(json.dumps({"cpu": time.process_time()}).encode())


class ProfileHandler(_BenchHandler):
    """``POST /_bench/profile/start`` and ``/stop``: cProfile the whole server process."""

    profiler: cProfile.Profile | None = None

    def post(self, action: str) -> None:
        cls = type(self)
        if action == "start":
            cls.profiler = cProfile.Profile()
            cls.profiler.enable()
            self.send(b"{}")
            return
        if cls.profiler is None:
            raise tornado.web.HTTPError(409)
        cls.profiler.disable()
        stats = pstats.Stats(cls.profiler).stats
        cls.profiler = None
        rows = [
            {"function": _function_name(key), "calls": value[1], "own": value[2], "total": value[3]}
            for key, value in stats.items()
        ]
        self.send(json.dumps(rows).encode())


def _function_name(key: tuple[str, int, str]) -> str:
    path, line, name = key
    if path == "~":
        return name
    path = re.sub(r"^.*/site-packages/", "", path)
    path = re.sub(r"^.*/lib/python3\.\d+/", "", path)
    path = re.sub(r"^.*/(airavata_hpc|bench)/", r"\1/", path)
    return f"{path}:{line}({name})"


BENCH_ROUTES = [
    (r"/_bench/constant", ConstantHandler),
    (r"/_bench/lookup/([^/]+)", LookupHandler),
    (r"/_bench/cpu", CpuHandler),
    (r"/_bench/profile/(start|stop)", ProfileHandler),
]


def serve(database_url: str, pipe: Connection) -> None:
    """The server process: the service's app plus the bench routes, until SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="server: %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(database_url, pipe))
    except BaseException as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


async def _serve(database_url: str, pipe: Connection) -> None:
    context = prepare(Settings(port=0, database_url=database_url))
    tokens = {}
    for user in (READER, WRITER):
        auth.ensure_user(user)
        tokens[user] = auth.create_token(context.jwt_secret, user, False, timedelta(hours=2))
    app = make_app(context)
    # After every API route, so the API is routed exactly as in production.
    app.wildcard_router.add_rules(BENCH_ROUTES)
    server = tornado.httpserver.HTTPServer(app, xheaders=True)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pipe.send({"port": sockets[0].getsockname()[1], "tokens": tokens})
    await stop.wait()
    server.stop()
    await server.close_all_connections()
    database.close()


@dataclass
class ServerProcess:
    """The server process as the benchmark sees it."""

    process: multiprocessing.process.BaseProcess
    port: int
    tokens: dict[str, str]

    def call(
        self, method: str, path: str, body: Any = None, user: str | None = None, expect: int = 200
    ) -> Any:
        """One request on a fresh connection, for seeding and checks; the JSON answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Accept": "application/json"}
        if user:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read()
        finally:
            connection.close()
        if response.status != expect:
            raise RuntimeError(f"{method} {path}: {response.status} {text[:300]!r}")
        return json.loads(text) if text else None

    def cpu(self) -> float:
        return float(self.call("GET", "/_bench/cpu")["cpu"])


@contextmanager
def running_server(database_url: str) -> Iterator[ServerProcess]:
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    process = spawn.Process(
        target=serve, args=(database_url, theirs), name="bench-server", daemon=True
    )
    process.start()
    try:
        if not ours.poll(60):
            raise RuntimeError("the server process did not start within 60 s")
        hello = ours.recv()
        if "error" in hello:
            raise RuntimeError(f"the server process failed: {hello['error']}")
        yield ServerProcess(process, hello["port"], hello["tokens"])
    finally:
        if process.is_alive():
            process.terminate()  # SIGTERM: the server closes its connections and database
            process.join(15)
        if process.is_alive():
            process.kill()
            process.join(5)


# ---------------------------------------------------------------------------------------------
# The load client


def raw_request(
    method: str, path: str, token: str | None = None, body: bytes | None = None
) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request, built once and sent many times."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@dataclass
class _Run:
    """One bounded run shared by all connections: the budget and what came back."""

    deadline: float  # time.perf_counter() value
    limit: int | None
    expect: int
    issued: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def take(self) -> bool:
        if time.perf_counter() >= self.deadline:
            return False
        if self.limit is not None and self.issued >= self.limit:
            return False
        self.issued += 1
        return True


class _Client:
    """One keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
            self.writer = None

    async def loop(self, request: bytes, run: _Run) -> None:
        while run.take():
            if self.writer is None:
                await self.open()
            assert self.reader is not None and self.writer is not None
            start = time.perf_counter()
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            keep_alive = True
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep_alive = False
            body = await self.reader.readexactly(length) if length else b""
            run.latencies.append(time.perf_counter() - start)
            if status != run.expect:
                run.errors += 1
                run.first_error = run.first_error or f"{status} {body[:200]!r}"
            if not keep_alive:
                await self.close()


@dataclass
class Result:
    """One endpoint's measured requests, possibly over several interleaved rounds."""

    label: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    client_cpu: float  # CPU seconds
    server_cpu: float  # CPU seconds
    first_error: str = ""
    round_rps: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_request(self) -> float:
        """Server CPU microseconds per request."""
        return self.server_cpu / self.requests * 1e6 if self.requests else math.nan

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile in milliseconds."""
        ordered = sorted(self.latencies)
        if not ordered:
            return math.nan
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    def spread(self) -> str:
        """How far the rounds' throughputs lie apart, relative to the overall figure."""
        if len(self.round_rps) < 2 or not self.rps:
            return "-"
        return f"{(max(self.round_rps) - min(self.round_rps)) / self.rps:.0%}"

    @classmethod
    def merge(cls, rounds: list[Result]) -> Result:
        first = rounds[0]
        return cls(
            first.label,
            first.concurrency,
            requests=sum(r.requests for r in rounds),
            errors=sum(r.errors for r in rounds),
            seconds=sum(r.seconds for r in rounds),
            latencies=[value for r in rounds for value in r.latencies],
            client_cpu=sum(r.client_cpu for r in rounds),
            server_cpu=sum(r.server_cpu for r in rounds),
            first_error=next((r.first_error for r in rounds if r.first_error), ""),
            round_rps=[r.rps for r in rounds],
        )


async def _measure(
    server: ServerProcess, phase: Phase, warmup: float, seconds: float, limit: int | None
) -> Result:
    clients = [_Client(server.port) for _ in range(phase.concurrency)]
    await asyncio.gather(*(client.open() for client in clients))
    try:
        if warmup > 0:
            warm = _Run(time.perf_counter() + warmup, None, phase.expect)
            await asyncio.gather(*(client.loop(phase.request, warm) for client in clients))

        server_cpu = server.cpu()  # blocking, but nothing is in flight here
        client_cpu = time.process_time()
        started = time.perf_counter()
        run = _Run(started + seconds, limit, phase.expect)
        await asyncio.gather(*(client.loop(phase.request, run) for client in clients))
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_cpu = server.cpu() - server_cpu
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    return Result(
        phase.label,
        phase.concurrency,
        requests=len(run.latencies),
        errors=run.errors,
        seconds=elapsed,
        latencies=run.latencies,
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        first_error=run.first_error,
    )


def measure(
    server: ServerProcess, phase: Phase, warmup: float, seconds: float, limit: int | None
) -> Result:
    """Warm up, then measure ``phase`` for ``seconds`` or ``limit`` requests."""
    return asyncio.run(_measure(server, phase, warmup, seconds, limit))


# ---------------------------------------------------------------------------------------------
# One database


@dataclass(frozen=True)
class Phase:
    label: str
    request: bytes
    expect: int
    concurrency: int


def experiment_body(name: str, sets: int) -> dict[str, Any]:
    return {
        "name": name,
        "project_id": "bench",
        "description": "benchmark experiment",
        "command_template": "run --alpha {{ alpha }} --beta {{ beta }} --gamma {{ gamma }}",
        "compute_requirements": {"max_retries": 1},
        "metadata": {"tags": ["bench", "sweep"]},
        "parameters": [
            {
                "id": f"p{index}",
                "values": {
                    "alpha": f"{index * 0.001:.3f}",
                    "beta": f"b{index}",
                    "gamma": str(index % 7),
                },
            }
            for index in range(sets)
        ],
    }


def seed(server: ServerProcess) -> str:
    """``SEEDED`` experiments of ``SEED_SETS`` sets each, through the API; returns one id."""
    ids = [
        server.call(
            "POST",
            "/api/v1/experiments",
            experiment_body(f"seed-{index}", SEED_SETS),
            user=READER,
            expect=201,
        )["id"]
        for index in range(SEEDED)
    ]
    return ids[len(ids) // 2]


def check(server: ServerProcess, experiment_id: str) -> None:
    """The endpoints answer what the benchmark expects before anything is timed."""
    fetched = server.call("GET", f"/api/v1/experiments/{experiment_id}", user=READER)
    if len(fetched["parameters"]) != SEED_SETS:
        raise RuntimeError(f"unexpected experiment body: {fetched}")
    page = server.call("GET", "/api/v1/experiments?limit=100", user=READER)
    if len(page["experiments"]) != 100 or page["total"] < 100:
        raise RuntimeError(f"list returned {len(page['experiments'])} of {page['total']}")
    if server.call("GET", f"/_bench/lookup/{experiment_id}")["id"] != experiment_id:
        raise RuntimeError("the bare lookup did not find the experiment")


def phases(
    server: ServerProcess,
    experiment_id: str,
    options: argparse.Namespace,
) -> tuple[list[Phase], Phase]:
    """The four GET phases (run interleaved) and the POST phase."""
    token = server.tokens[READER]
    gets = [
        Phase(
            "bare constant JSON", raw_request("GET", "/_bench/constant"), 200, options.concurrency
        ),
        Phase(
            "bare Experiment.get_by_id",
            raw_request("GET", f"/_bench/lookup/{experiment_id}"),
            200,
            options.concurrency,
        ),
        Phase(
            "GET /experiments/{id}",
            raw_request("GET", f"/api/v1/experiments/{experiment_id}", token),
            200,
            options.concurrency,
        ),
        Phase(
            "GET /experiments?limit=100",
            raw_request("GET", "/api/v1/experiments?limit=100", token),
            200,
            options.concurrency,
        ),
    ]
    body = json.dumps(experiment_body("bench-create", CREATE_SETS)).encode()
    post = Phase(
        f"POST /experiments {CREATE_SETS} sets",
        raw_request("POST", "/api/v1/experiments", server.tokens[WRITER], body),
        201,
        options.post_concurrency,
    )
    return gets, post


def run_database(
    url: str, options: argparse.Namespace, after_seed: Callable[[], None] | None = None
) -> list[Result]:
    """Seed, then measure every phase; the GET phases in interleaved rounds, so that a slow
    moment of the machine does not land on one endpoint only."""
    with running_server(url) as server:
        started = time.perf_counter()
        experiment_id = seed(server)
        if after_seed is not None:
            after_seed()
        check(server, experiment_id)
        analyzed = ", ANALYZE" if after_seed is not None else ""
        print(
            f"  seeded {SEEDED} experiments x {SEED_SETS} parameter sets{analyzed} in "
            f"{time.perf_counter() - started:.1f} s; server pid {server.process.pid}, "
            f"port {server.port}"
        )

        gets, post = phases(server, experiment_id, options)
        rounds = options.rounds
        window = options.seconds / rounds
        limit = math.ceil(options.requests / rounds) if options.requests else None
        measured: dict[str, list[Result]] = {phase.label: [] for phase in gets}
        for number in range(rounds):
            for phase in gets:
                warmup = options.warmup if number == 0 else 0.0
                measured[phase.label].append(measure(server, phase, warmup, window, limit))
        results = [Result.merge(measured[phase.label]) for phase in gets]
        results.append(
            measure(server, post, options.warmup, options.post_seconds, options.requests)
        )
        for result in results:
            print(
                f"  measured {result.label}: {result.requests} requests in {result.seconds:.1f} s"
            )

        if options.profile:
            for phase in (*gets[1:3], post):
                profile(server, phase, options)
    return results


def profile(server: ServerProcess, phase: Phase, options: argparse.Namespace) -> None:
    """cProfile the server while it serves ``phase``; the top functions per request."""
    server.call("POST", "/_bench/profile/start", {})
    seconds = options.post_seconds if phase.expect == 201 else options.seconds
    result = measure(server, phase, 0.0, seconds, options.requests)
    rows = server.call("POST", "/_bench/profile/stop", {})
    count = max(result.requests, 1)
    print(
        f"\n  cProfile of the server process, {phase.label}: {result.requests} requests "
        f"(profiled, so slower: {result.rps:,.0f} req/s); microseconds per request"
    )
    for key, title in (("total", "cumulative"), ("own", "own time")):
        print(f"    top {options.profile_top} by {title}:")
        print(f"    {'cum us':>9} {'own us':>9} {'calls/req':>9}  function")
        for row in sorted(rows, key=lambda r: r[key], reverse=True)[: options.profile_top]:
            print(
                f"    {row['total'] / count * 1e6:9.1f} {row['own'] / count * 1e6:9.1f} "
                f"{row['calls'] / count:9.2f}  {row['function'][:90]}"
            )


# ---------------------------------------------------------------------------------------------
# Databases


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as directory:
        yield f"sqlite:///{Path(directory) / 'bench.db'}"


@contextmanager
def postgres_url(base: str, schema: str) -> Iterator[tuple[str, Callable[[], None]]]:
    """A fresh schema, dropped afterwards; the service sees it through ``search_path``.

    Also yields a function that refreshes the planner statistics of that schema's tables, as
    autovacuum would on a live database; without them PostgreSQL may pick another index than
    the primary key for ``id = ? AND owner_id = ?``.
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise SystemExit(f"--schema {schema!r}: use lower-case letters, digits and _")
    admin = connect(base)

    def analyze() -> None:
        tables = admin.execute_sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
        for (table,) in tables:
            admin.execute_sql(f'ANALYZE "{schema}"."{table}"')

    try:
        admin.execute_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.execute_sql(f'CREATE SCHEMA "{schema}"')
        separator = "&" if "?" in base else "?"
        yield f"{base}{separator}options=-csearch_path%3D{schema}", analyze
    finally:
        admin.execute_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


# ---------------------------------------------------------------------------------------------
# Report


def _ratio(value: float, base: float) -> str:
    if not base:
        return "-"
    ratio = value / base
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.3f}x"


def print_table(title: str, results: list[Result]) -> None:
    constant, lookup = results[0].rps, results[1].rps
    print(f"\n{title}")
    header = (
        f"{'endpoint':<27} {'n':>6} {'req/s':>7} {'spread':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'/lookup':>7} {'/const':>6} {'srv%':>5} {'cli%':>5} {'us/req':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.label:<27} {r.requests:>6} {r.rps:>7,.0f} {r.spread():>6} "
            f"{r.percentile(50):>7.2f} {r.percentile(99):>7.2f} "
            f"{_ratio(r.rps, lookup):>7} {_ratio(r.rps, constant):>6} "
            f"{r.server_cpu / r.seconds:>5.0%} {r.client_cpu / r.seconds:>5.0%} "
            f"{r.cpu_per_request:>7,.0f}"
        )
    for r in results:
        if r.errors:
            print(f"  !! {r.label}: {r.errors} unexpected answers, first: {r.first_error}")


def print_targets(title: str, results: list[Result]) -> None:
    lookup, get_one, create = results[1], results[2], results[4]
    ratio = get_one.rps / lookup.rps if lookup.rps else 0.0

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"targets ({title}):")
    print(
        f"  GET /experiments/{{id}} >= {TARGET_GET_RATIO}x bare lookup req/s: {ratio:.2f}x "
        f"({get_one.rps:,.0f} vs {lookup.rps:,.0f}) -> {verdict(ratio >= TARGET_GET_RATIO)}"
    )
    print(
        f"      same ratio from server CPU per request: "
        f"{lookup.cpu_per_request / get_one.cpu_per_request:.2f}x "
        f"({lookup.cpu_per_request:,.0f} vs {get_one.cpu_per_request:,.0f} us)"
    )
    p50, p99 = create.percentile(50), create.percentile(99)
    print(
        f"  POST /experiments {CREATE_SETS} sets < {TARGET_CREATE_MS:.0f} ms: "
        f"p50 {p50:.0f} ms -> {verdict(p50 < TARGET_CREATE_MS)}, "
        f"p99 {p99:.0f} ms -> {verdict(p99 < TARGET_CREATE_MS)} ({create.requests} creates)"
    )


def _load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--seconds",
        type=float,
        default=4.0,
        help="measured seconds per GET endpoint, over all rounds (default 4)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="interleaved rounds the GET endpoints' time is split into (default 4)",
    )
    parser.add_argument(
        "--post-seconds", type=float, default=6.0, help="measured seconds for POST (default 6)"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="also stop each endpoint after this many measured requests",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="unmeasured seconds per endpoint before the first round (default 1)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="keep-alive connections for the GET endpoints (default 16)",
    )
    parser.add_argument(
        "--post-concurrency",
        type=int,
        default=1,
        help="connections for POST (default 1: latency is one create's cost)",
    )
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_URL,
        help=f"PostgreSQL database to use (default {POSTGRES_URL})",
    )
    parser.add_argument(
        "--schema",
        default=DEFAULT_SCHEMA,
        help=f"PostgreSQL schema created and dropped by the benchmark (default {DEFAULT_SCHEMA})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, cProfile the server on the bare lookup, GET by id and POST",
    )
    parser.add_argument(
        "--profile-top",
        type=int,
        default=25,
        help="functions listed per profile table (default 25)",
    )
    options = parser.parse_args(argv)
    if options.rounds < 1 or options.concurrency < 1 or options.post_concurrency < 1:
        parser.error("--rounds and the concurrencies must be at least 1")
    if options.seconds <= 0 or options.post_seconds <= 0 or options.warmup < 0:
        parser.error("--seconds and --post-seconds must be positive, --warmup not negative")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    bound = f" or {options.requests} requests" if options.requests else ""
    lines = [
        "airavata-hpc API benchmark (prints figures; the exit status never depends on them)",
        f"  python {platform.python_version()}, tornado {tornado.version}, peewee "
        f"{peewee.__version__}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        f"  load average before: {_load_average()} (other work on the machine skews the figures)",
        "  server: one process, one IOLoop: the service's app in a tornado HTTPServer on",
        "          127.0.0.1, no execution engine; the bare handlers are extra routes on the",
        "          same app and use the same database connection",
        f"  client: asyncio raw-socket HTTP/1.1 client in the benchmark process; "
        f"{options.concurrency} keep-alive",
        f"          connections for GET, {options.post_concurrency} for POST; closed loop (each "
        "connection sends",
        "          its next request when the last answer is in)",
        f"  GET: {options.warmup:g} s warm-up each, then {options.seconds:g} s{bound} each in "
        f"{options.rounds} interleaved rounds",
        f"  POST: {options.warmup:g} s warm-up, then {options.post_seconds:g} s{bound}; "
        "latency = one create",
        "  n: requests measured; spread: (max - min) / overall of the rounds' req/s;",
        "  /lookup, /const: req/s over the bare lookup's and the constant handler's req/s;",
        "  srv%, cli%: CPU time of the server / client process over wall time (100% = 1 core)",
        "  us/req: server CPU microseconds per request; steadier than req/s when other work",
        "          shares the machine, but without PostgreSQL's own work",
    ]
    print("\n".join(lines))

    kinds = ["sqlite", "postgresql"] if options.database == "both" else [options.database]
    tables = []
    for kind in kinds:
        if kind == "sqlite":
            print("\nSQLite (temporary file, WAL)")
            with sqlite_url() as url:
                tables.append(("SQLite", run_database(url, options)))
        else:
            print(f"\nPostgreSQL ({options.postgres_url}, schema {options.schema})")
            try:
                with postgres_url(options.postgres_url, options.schema) as (url, analyze):
                    tables.append(("PostgreSQL", run_database(url, options, analyze)))
            except peewee.OperationalError as exc:
                print(f"  skipped: cannot use PostgreSQL: {exc}")

    for title, results in tables:
        print_table(title, results)
    print()
    for title, results in tables:
        print_targets(title, results)
    print(f"load average after: {_load_average()}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
