"""``airavata-hpc``: the administrator's command line (serve, tokens, API keys, migrations,
cluster checks). Every command that touches the database takes ``--database`` and honours
``AIRAVATA_DATABASE_URL``."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from airavata_hpc import __version__, auth, migrations
from airavata_hpc.db import database_url_from_env, describe, open_database
from airavata_hpc.settings import SettingsError, load_settings

DATABASE_HELP = (
    "Database URL: sqlite:///PATH (default sqlite:///airavata-hpc.db) or "
    "postgresql://USER@HOST:PORT/NAME. Default: $AIRAVATA_DATABASE_URL."
)
CONFIG_HELP = (
    "Configuration directory holding server.yaml and clusters.d/*.yaml. "
    "Default: $AIRAVATA_CONFIG, else the built-in local cluster only."
)


def database_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--database", "database_url", metavar="URL", help=DATABASE_HELP)(command)


def _open(database_url: str | None) -> tuple[int, int]:
    """Open and migrate the database; returns the schema versions before and after."""
    url = database_url_from_env(database_url)
    try:
        open_database(url)
        return migrations.migrate()
    except Exception as exc:  # driver errors differ by database; show them plainly
        raise click.ClickException(f"cannot open database {describe(url)}: {exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="airavata-hpc")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Run and administer the airavata-hpc job service."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


@main.command()
@click.option("--port", type=int, help="Port to listen on. Default: $AIRAVATA_PORT, else 8080.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 for every interface.",
)
@database_option
@click.option("--config", "config_dir", metavar="DIR", help=CONFIG_HELP)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Accept requests without credentials, every caller an admin. For a "
    "single-user laptop only; logged as a warning at every start.",
)
def serve(
    port: int | None, host: str, database_url: str | None, config_dir: str | None, no_auth: bool
) -> None:
    """Start the REST API and the execution engine; stop with Ctrl-C or SIGTERM."""
    from airavata_hpc.clusters import ClusterConfigError
    from airavata_hpc.server import serve as run

    try:
        settings = load_settings(port, database_url, config_dir, auth_enabled=not no_auth)
        asyncio.run(run(settings, host=host))
    except (SettingsError, ClusterConfigError) as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def token() -> None:
    """Bearer tokens (HS256 JWT) for the REST API."""


@token.command("create")
@click.option("--user", required=True, help="User name; becomes owner_id of what they create.")
@click.option("--admin", is_flag=True, help="The token's holder sees every user's experiments.")
@click.option("--ttl", default="24h", show_default=True, help="Lifetime: 30m, 12h, 7d, ...")
@database_option
@click.option("--config", "config_dir", metavar="DIR", help=CONFIG_HELP)
def token_create(
    user: str, admin: bool, ttl: str, database_url: str | None, config_dir: str | None
) -> None:
    """Print a token the server started on the same database (or secret) accepts."""
    try:
        lifetime = auth.parse_ttl(ttl)
        settings = load_settings(None, database_url, config_dir)
    except (ValueError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None
    _open(settings.database_url)
    auth.ensure_user(user, is_admin=admin)
    click.echo(auth.create_token(auth.jwt_secret(settings.jwt_secret), user, admin, lifetime))


@main.group("api-key")
def api_key() -> None:
    """API keys, sent as the X-API-Key header."""


@api_key.command("create")
@click.option("--user", required=True, help="User the key acts as (created if new).")
@database_option
def api_key_create(user: str, database_url: str | None) -> None:
    """Print a new API key. Only its hash is stored: keep the printed key safe."""
    _open(database_url)
    click.echo(auth.create_api_key(user))


@main.group()
def clusters() -> None:
    """The clusters in CONFIG_DIR/clusters.d/*.yaml."""


@clusters.command("check")
@click.argument("name", required=False)
@click.option("--config", "config_dir", metavar="DIR", help=CONFIG_HELP)
def clusters_check(name: str | None, config_dir: str | None) -> None:
    """Connect to each cluster (or only NAME), run its scheduler's version command, check
    that its partition or queue exists and that work_dir is writable; one row per cluster.
    Exits non-zero if any check fails."""
    from airavata_hpc.cluster_check import check_cluster, format_table
    from airavata_hpc.clusters import ClusterConfigError, load_clusters

    try:
        settings = load_settings(None, None, config_dir)
        configured = load_clusters(settings.config_dir, default_work_dir=settings.work_dir)
    except (SettingsError, ClusterConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    if name is not None:
        configured = [cluster for cluster in configured if cluster.name == name]
        if not configured:
            raise click.ClickException(f"no cluster named {name!r} in the configuration")

    async def run_all() -> list[Any]:
        return list(await asyncio.gather(*(check_cluster(c) for c in configured)))

    results = asyncio.run(run_all())
    click.echo(format_table(results))
    if not all(result.ok for result in results):
        sys.exit(1)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("migrate")
@database_option
def db_migrate(database_url: str | None) -> None:
    """Apply pending schema migrations (the server also does this at start)."""
    before, after = _open(database_url)
    if before == after:
        click.echo(f"schema is up to date (version {after})")
    else:
        click.echo(f"schema migrated from version {before} to {after}")


if __name__ == "__main__":
    main()
