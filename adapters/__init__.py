"""Batch-system adapters and their registry: ``get_adapter("slurm")`` and friends.

Adapters are pure command builders and output parsers (see :mod:`.base` for the contract).
Each module is imported only when its adapter is first asked for, and a module that fails to
import is reported with its cause and the list of known names.
"""

from __future__ import annotations

import importlib
from typing import Any

from airavata_hpc.adapters.base import (
    AdapterError,
    BatchAdapter,
    BatchJob,
    JobElement,
    NativeJobStatus,
)

__all__ = [
    "AdapterError",
    "BatchAdapter",
    "BatchJob",
    "JobElement",
    "NativeJobStatus",
    "UnknownAdapterError",
    "adapter_names",
    "get_adapter",
]

#: Cluster ``type`` -> "module:class" (modules relative to this package).
_REGISTRY: dict[str, str] = {
    "slurm": "slurm:SlurmAdapter",
    "pbs": "pbs:PBSAdapter",
    "sge": "sge:SGEAdapter",
    "local": "local:LocalAdapter",
}


class UnknownAdapterError(LookupError):
    """No adapter of that name, or its module failed to import; names the known ones."""


def adapter_names() -> list[str]:
    """The known adapter (cluster type) names, sorted."""
    return sorted(_REGISTRY)


def get_adapter(type_name: str, **options: Any) -> BatchAdapter:
    """A new adapter for ``type_name``; ``options`` go to its constructor.

    PBS takes ``flavor`` ("pbspro" or "torque"), SGE ``parallel_environment`` (default
    "smp"), local ``cores`` (how many cores the machine lends to jobs).
    """
    target = _REGISTRY.get(type_name)
    if target is None:
        raise UnknownAdapterError(
            f"unknown batch system type {type_name!r}; known types: {', '.join(adapter_names())}"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        raise UnknownAdapterError(
            f"adapter {type_name!r} failed to import ({exc}); "
            f"known types: {', '.join(adapter_names())}"
        ) from exc
    adapter_class: type[BatchAdapter] = getattr(module, class_name)
    return adapter_class(**options)
