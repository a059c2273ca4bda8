"""Opening the database named by a URL: SQLite by default, PostgreSQL in production.

All models bind to :data:`database`, a proxy that :func:`open_database` points at the real
database. SQLite runs in WAL mode with a busy timeout so that the CLI and the server can share
one file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import peewee
from playhouse.db_url import connect

log = logging.getLogger(__name__)

database = peewee.DatabaseProxy()

DEFAULT_DATABASE_URL = "sqlite:///airavata-hpc.db"

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": 10000,
    "cache_size": -32000,
}


def database_url_from_env(explicit: str | None = None) -> str:
    """The URL to use: an explicit one, else ``AIRAVATA_DATABASE_URL``, else the SQLite file."""
    return explicit or os.environ.get("AIRAVATA_DATABASE_URL") or DEFAULT_DATABASE_URL


def describe(url: str) -> str:
    """The URL without a password, for logs."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def open_database(url: str) -> peewee.Database:
    """Connect to ``url`` and bind the model proxy to it; creates a SQLite file's folder."""
    scheme = urlparse(url).scheme
    if scheme.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        db = connect(url, pragmas=SQLITE_PRAGMAS)
    elif scheme in ("postgres", "postgresql"):
        db = connect(url.replace("postgres://", "postgresql://", 1))
    else:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/NAME"
        )
    database.initialize(db)
    db.connect(reuse_if_open=True)
    log.info("database opened: %s", describe(url))
    return db


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)
