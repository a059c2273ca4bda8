"""The README's first command: a short, self-contained demonstration on this machine.

It starts the server on a fresh SQLite file with the local cluster, makes a token, submits the
example sweep ``examples/integral.yaml`` with ``airavata submit --watch``, prints the final state
and a few results, and stops the server, all in a scratch directory that it removes at the end
(``--keep`` leaves it). Nothing outside that directory is touched, so it can run again and
again. Run it with ``python -m airavata_hpc.demo``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import resources
from pathlib import Path

import click

STARTUP_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise click.ClickException(
                "the server stopped while starting:\n" + log_file.read_text()[-3000:]
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise click.ClickException(
        f"the server did not answer within {STARTUP_SECONDS} s; its log: {log_file}"
    )


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (a clean shutdown), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, None)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _write_config(root: Path) -> Path:
    config = root / "config"
    (config / "clusters.d").mkdir(parents=True)
    (config / "clusters.d" / "local.yaml").write_text(
        "# The demo's cluster: this machine, polled every half second.\n"
        "name: local\n"
        "type: local\n"
        f"work_dir: {root / 'work'}\n"
        "poll_interval: 0.5\n"
        "compute_types: [cpu, local]\n"
    )
    return config


@click.command()
@click.option("--keep", is_flag=True, help="Keep the scratch directory (database, job files).")
@click.option(
    "--sweep",
    type=click.Path(exists=True, dir_okay=False),
    help="Run this sweep file instead of the shipped integral example.",
)
def main(keep: bool, sweep: str | None) -> None:
    """Run the demonstration: server, sweep, progress, results, shutdown."""
    root = Path(tempfile.mkdtemp(prefix="airavata-demo-"))
    database = f"sqlite:///{root / 'airavata.db'}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = root / "server.log"
    env = {**os.environ, "AIRAVATA_DATABASE_URL": database, "AIRAVATA_SERVER": url}
    env.pop("AIRAVATA_CONFIG", None)
    env.pop("AIRAVATA_API_KEY", None)
    admin = [sys.executable, "-m", "airavata_hpc.admin_cli"]
    user = [sys.executable, "-m", "airavata_hpc.user_cli"]
    sweep_file = sweep or str(resources.files("airavata_hpc") / "examples" / "integral.yaml")

    click.secho(f"==> starting airavata-hpc on {url} (SQLite in {root})", bold=True)
    with open(log_file, "wb") as log:
        server = subprocess.Popen(
            [*admin, "serve", "--port", str(port), "--config", str(_write_config(root))],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(url, server, log_file)
        token = subprocess.run(
            [*admin, "token", "create", "--user", "demo", "--ttl", "1h"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        env["AIRAVATA_TOKEN"] = token.strip()

        click.secho(f"==> submitting {sweep_file}", bold=True)
        submitted = subprocess.run(
            [*user, "submit", sweep_file], env=env, stdout=subprocess.PIPE, text=True
        )
        experiment_id = submitted.stdout.strip()
        if submitted.returncode != 0 or not experiment_id:
            raise click.ClickException("the sweep was not submitted (see the message above)")
        click.secho(f"==> watching experiment {experiment_id}", bold=True)
        watched = subprocess.run([*user, "watch", experiment_id], env=env)

        click.secho("==> final state", bold=True)
        subprocess.run([*user, "status", experiment_id, "--limit", "5"], env=env, check=False)
        click.secho("==> a few results", bold=True)
        subprocess.run(
            [*user, "results", experiment_id, "--limit", "4", "--lines", "1"], env=env, check=False
        )
        if watched.returncode != 0:
            raise click.ClickException(f"experiment {experiment_id} did not complete")
    finally:
        click.secho("==> stopping the server", bold=True)
        _stop(server)
        if keep:
            click.echo(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    click.secho("==> done", bold=True)


if __name__ == "__main__":
    main()
