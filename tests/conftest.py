"""Shared fixtures: a database per test (SQLite and the real PostgreSQL) and a live server."""

from __future__ import annotations

import os

import peewee
import pytest

from airavata_hpc.db import database
from airavata_hpc.settings import Settings

from support import POSTGRES_BASE, LiveServer

pytest_plugins = ["lab_fixtures"]

PG_SCHEMA = f"ah_test_{os.getpid()}"


def _reset_postgres_schema() -> None:
    db = peewee.PostgresqlDatabase(None)
    db.init("test", user="postgres", host="127.0.0.1", port=5432)
    with db.connection_context():
        db.execute_sql(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE')
        db.execute_sql(f'CREATE SCHEMA "{PG_SCHEMA}"')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'airavata.db'}"
    else:
        _reset_postgres_schema()
        yield f"{POSTGRES_BASE}?options=-csearch_path%3D{PG_SCHEMA}"
    if database.obj is not None:
        database.obj.close()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'airavata.db'}"


@pytest.fixture
def server(database_url: str):
    """The API on a free port, no execution engine, auth on."""
    live = LiveServer(Settings(port=0, database_url=database_url)).start()
    yield live
    live.stop()


@pytest.fixture
def alice(server):
    return server.client("alice")


@pytest.fixture
def bob(server):
    return server.client("bob")


@pytest.fixture
def admin(server):
    return server.client("root", admin=True)
