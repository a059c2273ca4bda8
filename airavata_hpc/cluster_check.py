"""``airavata-hpc clusters check``: can the service use each configured cluster?

For each cluster: connect (SSH or local), run the batch system's version command, check that
the partition or queue exists, and that ``work_dir`` can be created and written. Every check
runs through the same runner and adapter the engine uses, so a green row means the engine will
get through too.
"""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass

from airavata_hpc.clusters import ClusterConfig
from airavata_hpc.remote import RemoteCommandError, runner_for_cluster


@dataclass
class CheckResult:
    cluster: ClusterConfig
    version: str = "-"
    queue: str = "-"
    work_dir: str = "-"
    problems: list[str] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


async def check_cluster(cluster: ClusterConfig) -> CheckResult:
    result = CheckResult(cluster, problems=[])
    adapter = cluster.adapter()
    runner = runner_for_cluster(cluster)
    try:
        version = await runner.run(adapter.version_command(), check=False)
        if version.ok:
            result.version = adapter.parse_version_output(version.stdout)
        else:
            result.problems.append(f"version command failed: {_first_line(version.stderr)}")

        if cluster.queue:
            queue = await runner.run(adapter.queue_check_command(cluster.queue), check=False)
            exists = adapter.queue_exists(queue.exit_status, queue.stdout)
            result.queue = f"{cluster.queue} ok" if exists else f"{cluster.queue} MISSING"
            if not exists:
                result.problems.append(f"partition/queue {cluster.queue!r} not found")

        probe = posixpath.join(cluster.work_dir, f".airavata-check-{uuid.uuid4().hex}")
        await runner.write_files({probe: "airavata-hpc write check\n"})
        await runner.run(["rm", "-f", probe])
        result.work_dir = "writable"
    except RemoteCommandError as exc:
        result.problems.append(
            exc.problem + (f" ({_first_line(exc.stderr)})" if exc.stderr else "")
        )
    except OSError as exc:
        result.problems.append(f"work_dir {cluster.work_dir}: {exc}")
    finally:
        await runner.close()
    return result


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def format_table(results: list[CheckResult]) -> str:
    rows = [("CLUSTER", "TYPE", "HOST", "VERSION", "QUEUE", "WORK_DIR", "RESULT")]
    for item in results:
        host = (
            f"{item.cluster.user}@{item.cluster.host}:{item.cluster.port}"
            if item.cluster.host
            else "(local)"
        )
        rows.append(
            (
                item.cluster.name,
                item.cluster.type,
                host,
                item.version,
                item.queue,
                item.work_dir,
                "ok" if item.ok else "FAIL: " + "; ".join(item.problems),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    )
