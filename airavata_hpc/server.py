"""Starting and stopping the service: database, migrations, secret, engine, HTTP server."""

from __future__ import annotations

import asyncio
import logging
import signal

import tornado.httpserver

from airavata_hpc import auth, migrations
from airavata_hpc.db import describe, open_database
from airavata_hpc.metrics import Metrics
from airavata_hpc.settings import Settings
from airavata_hpc.web.app import make_app
from airavata_hpc.web.base import AppContext

log = logging.getLogger(__name__)


def prepare(settings: Settings) -> AppContext:
    """Open and migrate the database and build the shared context (no engine yet)."""
    open_database(settings.database_url)
    before, after = migrations.migrate()
    if before != after:
        log.info("database schema migrated from version %s to %s", before, after)
    secret = auth.jwt_secret(settings.jwt_secret)
    return AppContext(settings=settings, jwt_secret=secret, metrics=Metrics())


async def serve(settings: Settings, host: str = "127.0.0.1", with_engine: bool = True) -> None:
    """Run until SIGINT or SIGTERM."""
    context = prepare(settings)
    if not settings.auth_enabled:
        log.warning(
            "AUTHENTICATION IS DISABLED (--no-auth): every caller is an admin; never "
            "run this way on a network others can reach"
        )
    if with_engine:
        from airavata_hpc.engine import Engine

        context.engine = Engine.from_settings(settings, context.metrics)
        await context.engine.start()

    server = tornado.httpserver.HTTPServer(make_app(context), xheaders=True)
    server.listen(settings.port, address=host)
    log.info(
        "airavata-hpc %s listening on http://%s:%s/api/v1 (database %s)",
        context.version,
        host,
        settings.port,
        describe(settings.database_url),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("shutting down")
    server.stop()
    if context.engine is not None:
        await context.engine.stop()
    await server.close_all_connections()
