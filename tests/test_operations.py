"""What operators rely on: /health follows the database (503 while it is gone, 200 once it is
back), /health/detailed rolls components up, /metrics counts requests and tasks."""

from __future__ import annotations

import uuid

import peewee
import pytest

from airavata_hpc.settings import Settings

from support import Client, LiveServer, experiment_body


def admin_sql(*statements):
    db = peewee.PostgresqlDatabase("test", user="postgres", host="127.0.0.1", port=5432)
    with db.connection_context():
        for statement in statements:
            db.execute_sql(statement)


@pytest.fixture
def outage_database():
    """A PostgreSQL database of its own, so cutting it off touches nothing else."""
    name = f"ah_outage_{uuid.uuid4().hex[:8]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    yield name
    admin_sql(
        f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        f'DROP DATABASE "{name}"',
    )


def test_health_is_503_while_the_database_is_gone_and_200_when_it_is_back(outage_database):
    server = LiveServer(
        Settings(port=0, database_url=f"postgresql://postgres@127.0.0.1:5432/{outage_database}")
    ).start()
    try:
        probe = Client(server.url)
        assert probe.get("/health").json()["status"] == "healthy"

        admin_sql(
            f'ALTER DATABASE "{outage_database}" WITH ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{outage_database}'",
        )
        down = probe.get("/health")
        assert down.status_code == 503 and down.json()["status"] == "unhealthy"
        detailed = probe.get("/health/detailed").json()
        assert detailed["status"] == "unhealthy"
        assert detailed["components"]["database"]["status"] == "unhealthy"
        assert detailed["components"]["database"]["details"]["error"]

        admin_sql(f'ALTER DATABASE "{outage_database}" WITH ALLOW_CONNECTIONS true')
        assert probe.get("/health").status_code == 200
    finally:
        server.stop()


def test_metrics_count_requests_and_tasks(server, alice):
    created = alice.post("/experiments", json=experiment_body())
    assert created.status_code == 201
    alice.get("/experiments/nope")

    text = Client(server.url).get("/metrics").text

    assert (
        'airavata_http_requests_total{handler="ExperimentsHandler",method="POST",status="201"} 1.0'
    ) in text
    assert 'status="404"' in text
    assert 'airavata_tasks{status="CREATED"} 2.0' in text
    assert 'airavata_experiments{status="CREATED"} 1.0' in text


def test_detailed_health_without_an_engine_says_so(server):
    body = Client(server.url).get("/health/detailed").json()
    assert body["components"]["database"]["status"] == "healthy"
    assert body["components"]["scheduler_daemon"]["status"] == "degraded"
    assert body["status"] == "degraded"
