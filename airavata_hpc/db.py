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


def bulk_insert(model: type[peewee.Model], rows: list[dict[str, object]]) -> None:
    """Insert many rows with one prepared statement: ``insert_many`` spends most of its time
    building SQL text, which for the thousands of rows of a large sweep is the larger cost.
    Every row must have the same keys (field names); missing fields get their defaults and
    values go through the fields' own conversions, as with ``insert_many``."""
    if not rows:
        return
    given = set(rows[0])
    fields = [
        field
        for field in model._meta.sorted_fields
        if field.name in given or field.default is not None
    ]
    rows = [{**_defaults(fields, given), **row} for row in rows]
    db = database.obj
    columns = ", ".join(f'"{field.column_name}"' for field in fields)
    values = [tuple(field.db_value(row[field.name]) for field in fields) for row in rows]
    table = f'"{model._meta.table_name}"'
    if is_postgres():
        from psycopg2.extras import execute_values

        with db.atomic():
            execute_values(
                db.cursor(), f"INSERT INTO {table} ({columns}) VALUES %s", values, page_size=1000
            )
        return
    placeholders = ", ".join([db.param] * len(fields))
    with db.atomic():
        db.cursor().executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", values)


def _defaults(fields: list[peewee.Field], given: set[str]) -> dict[str, object]:
    return {
        field.name: field.default() if callable(field.default) else field.default
        for field in fields
        if field.name not in given
    }
