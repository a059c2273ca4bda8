"""Test helpers: a real server on a free port in a thread, and a small JSON client."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import requests
import tornado.httpserver
import tornado.netutil

from airavata_hpc import auth
from airavata_hpc.server import prepare
from airavata_hpc.settings import Settings
from airavata_hpc.web.app import make_app

POSTGRES_BASE = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """The real application served over HTTP from a background thread."""

    def __init__(self, settings: Settings, engine_factory: Any = None) -> None:
        self.settings = settings
        self.engine_factory = engine_factory
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.context: Any = None

    def start(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(30) or self.error:
            raise RuntimeError(f"server did not start: {self.error!r}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to the test through start()
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.context = prepare(self.settings)
        if self.engine_factory is not None:
            self.context.engine = self.engine_factory(self.settings, self.context.metrics)
            await self.context.engine.start()
        server = tornado.httpserver.HTTPServer(make_app(self.context))
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = self.url + "/api/v1"
        self._ready.set()
        await self._stop.wait()
        server.stop()
        if self.context.engine is not None:
            await self.context.engine.stop()
        await server.close_all_connections()

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def token(self, user: str, admin: bool = False, ttl: timedelta = timedelta(hours=1)) -> str:
        auth.ensure_user(user, is_admin=admin)
        return auth.create_token(self.context.jwt_secret, user, admin, ttl)

    def client(self, user: str = "alice", admin: bool = False) -> Client:
        return Client(self.api, {"Authorization": f"Bearer {self.token(user, admin)}"})


@dataclass
class Client:
    """``requests`` with the base URL and credentials filled in."""

    base: str
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)


def experiment_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "sweep",
        "project_id": "proj",
        "command_template": "echo {{ alpha }} {{ beta }}",
        "parameters": [
            {"id": "p1", "values": {"alpha": "0.1", "beta": "x"}},
            {"id": "p2", "values": {"alpha": "0.5", "beta": "y"}},
        ],
    }
    body.update(overrides)
    return body


def assert_error(response: requests.Response, status: int) -> dict[str, Any]:
    """The response is an ``ErrorResponse`` with ``status`` and a matching request id."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "message", "timestamp", "request_id"}, body
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body
