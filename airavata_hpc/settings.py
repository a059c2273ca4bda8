"""Server settings from command-line options, environment variables and ``server.yaml``.

Precedence: an explicit option, then the environment (``AIRAVATA_PORT``,
``AIRAVATA_DATABASE_URL``, ``AIRAVATA_CONFIG``, ``AIRAVATA_JWT_SECRET``), then
``CONFIG_DIR/server.yaml``, then the defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from airavata_hpc.db import DEFAULT_DATABASE_URL

DEFAULT_PORT = 8080
SERVER_KEYS = {"port", "database_url", "jwt_secret", "work_dir"}


class SettingsError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    port: int = DEFAULT_PORT
    database_url: str = DEFAULT_DATABASE_URL
    config_dir: Path | None = None
    jwt_secret: str | None = None
    auth_enabled: bool = True
    work_dir: Path | None = None


def load_settings(
    port: int | None = None,
    database_url: str | None = None,
    config_dir: str | None = None,
    auth_enabled: bool = True,
) -> Settings:
    """Resolve every setting once, at start-up."""
    config_text = config_dir or os.environ.get("AIRAVATA_CONFIG")
    directory = Path(config_text).expanduser() if config_text else None
    if directory is not None and not directory.is_dir():
        raise SettingsError(f"configuration directory {directory} does not exist")
    server = _read_server_yaml(directory) if directory else {}

    env_port = os.environ.get("AIRAVATA_PORT")
    try:
        resolved_port = int(port or env_port or server.get("port") or DEFAULT_PORT)
    except ValueError:
        raise SettingsError(f"AIRAVATA_PORT must be a number, not {env_port!r}") from None

    work_dir = server.get("work_dir")
    return Settings(
        port=resolved_port,
        database_url=(
            database_url
            or os.environ.get("AIRAVATA_DATABASE_URL")
            or server.get("database_url")
            or DEFAULT_DATABASE_URL
        ),
        config_dir=directory,
        jwt_secret=server.get("jwt_secret"),
        auth_enabled=auth_enabled,
        work_dir=Path(work_dir).expanduser() if work_dir else None,
    )


def _read_server_yaml(directory: Path) -> dict[str, Any]:
    path = directory / "server.yaml"
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: must be a mapping of settings")
    unknown = sorted(set(data) - SERVER_KEYS)
    if unknown:
        raise SettingsError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: "
            + ", ".join(sorted(SERVER_KEYS))
        )
    return data
