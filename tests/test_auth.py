"""Credentials: bearer tokens, API keys, and the admin commands that make them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from airavata_hpc.admin_cli import main
from airavata_hpc.settings import Settings

from support import Client, LiveServer, assert_error, experiment_body


def test_requests_without_valid_credentials_are_401(server):
    anonymous = Client(server.api)
    assert "credentials required" in assert_error(anonymous.get("/experiments"), 401)["message"]

    garbage = Client(server.api, {"Authorization": "Bearer not.a.token"})
    assert_error(garbage.get("/experiments"), 401)

    basic = Client(server.api, {"Authorization": "Basic YTpi"})
    assert "Bearer" in assert_error(basic.get("/experiments"), 401)["message"]

    expired = Client(
        server.api, {"Authorization": "Bearer " + server.token("alice", ttl=timedelta(seconds=-5))}
    )
    assert "expired" in assert_error(expired.get("/experiments"), 401)["message"]

    wrong_key = Client(server.api, {"X-API-Key": "ahk_nope"})
    assert_error(wrong_key.get("/experiments"), 401)


def test_probes_need_no_credentials(server):
    anonymous = Client(server.url)
    for path in (
        "/health",
        "/health/detailed",
        "/metrics",
        "/api/v1/health",
        "/api/v1/openapi.yaml",
    ):
        assert anonymous.get(path).status_code == 200, path
    assert_error(anonymous.get("/api/worker-binary"), 404)


def test_cli_token_and_api_key_are_accepted_by_the_server(server, database_url):
    runner = CliRunner()
    made = runner.invoke(
        main, ["token", "create", "--user", "carol", "--ttl", "1h", "--database", database_url]
    )
    assert made.exit_code == 0, made.output
    carol = Client(server.api, {"Authorization": f"Bearer {made.output.strip()}"})
    created = carol.post("/experiments", json=experiment_body())
    assert created.status_code == 201 and created.json()["owner_id"] == "carol"

    key = runner.invoke(
        main, ["api-key", "create", "--user", "dave"], env={"AIRAVATA_DATABASE_URL": database_url}
    )
    assert key.exit_code == 0, key.output
    dave = Client(server.api, {"X-API-Key": key.output.strip()})
    assert dave.get("/experiments").json()["total"] == 0
    assert_error(dave.get(f"/experiments/{created.json()['id']}"), 404)

    admin = runner.invoke(
        main, ["token", "create", "--user", "eve", "--admin", "--database", database_url]
    )
    eve = Client(server.api, {"Authorization": f"Bearer {admin.output.strip()}"})
    assert eve.get(f"/experiments/{created.json()['id']}").status_code == 200


def test_secret_from_the_environment_wins(sqlite_url, monkeypatch):
    monkeypatch.setenv("AIRAVATA_JWT_SECRET", "s3cret-from-the-environment-0123456789")
    live = LiveServer(Settings(port=0, database_url=sqlite_url)).start()
    try:
        assert live.context.jwt_secret == "s3cret-from-the-environment-0123456789"
        token = (
            CliRunner()
            .invoke(main, ["token", "create", "--user", "x", "--database", sqlite_url])
            .output.strip()
        )
        ok = Client(live.api, {"Authorization": f"Bearer {token}"}).get("/experiments")
        assert ok.status_code == 200
    finally:
        live.stop()


def test_no_auth_mode_is_explicit_and_announced(sqlite_url, caplog):
    import asyncio

    from airavata_hpc import server as server_module

    live = LiveServer(Settings(port=0, database_url=sqlite_url, auth_enabled=False)).start()
    try:
        response = Client(live.api).post("/experiments", json=experiment_body())
        assert response.status_code == 201 and response.json()["owner_id"] == "anonymous"
    finally:
        live.stop()

    async def start_and_stop():
        task = asyncio.create_task(
            server_module.serve(
                Settings(port=0, database_url=sqlite_url, auth_enabled=False), with_engine=False
            )
        )
        while "AUTHENTICATION IS DISABLED" not in caplog.text and not task.done():
            await asyncio.sleep(0.01)
        task.cancel()

    with caplog.at_level("WARNING"):
        asyncio.run(asyncio.wait_for(start_and_stop(), 10))
    assert "AUTHENTICATION IS DISABLED" in caplog.text


@pytest.mark.parametrize("ttl", ["0", "-1h", "soon"])
def test_bad_ttl_is_a_clear_cli_error(sqlite_url, ttl):
    result = CliRunner().invoke(
        main, ["token", "create", "--user", "x", "--ttl", ttl, "--database", sqlite_url]
    )
    assert result.exit_code != 0 and "Error" in result.output


def test_db_migrate_reports_the_version(sqlite_url):
    first = CliRunner().invoke(main, ["db", "migrate", "--database", sqlite_url])
    assert first.exit_code == 0 and "migrated from version 0" in first.output
    again = CliRunner().invoke(main, ["db", "migrate", "--database", sqlite_url])
    assert "up to date" in again.output
