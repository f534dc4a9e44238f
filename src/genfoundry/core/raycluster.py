"""Joining the Ray cluster named by the ``ray_address`` setting, once per process.

``local`` starts a cluster on this machine (``ray_workers`` CPUs, default all),
``auto`` joins the one running here, ``ray://HOST:10001`` a remote one. Batch work
that can run on Ray (ingestion, labeling) calls :func:`connect` and sends tasks;
everything that decides what is stored stays in the calling process.

A local cluster's processes die with the *thread* that started them (Linux's
parent-death signal), so ``ray.init`` runs on a thread kept for the life of the
process, never on a short-lived worker thread.

Example::

    ray = connect(settings)           # the ray module, initialised
    workers = cluster_cpus(ray)
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any

from genfoundry.core.errors import ConfigError, ProviderError

__all__ = ["available", "cluster_cpus", "connect"]

_INIT_THREAD = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-driver")


def available() -> bool:
    """Whether Ray is installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def connect(settings) -> Any:
    """The ``ray`` module, connected to the cluster of ``settings.ray_address``."""
    try:
        import ray
    except ImportError:
        raise ConfigError("ray_address is set but Ray is not installed: pip install 'genfoundry[ray]'") from None
    address = settings.ray_address
    if not address:
        raise ConfigError("ray_address is not set")
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
    if address == "local":
        kwargs["num_cpus"] = settings.ray_workers or os.cpu_count() or 1
    else:
        kwargs["address"] = address
    try:
        _INIT_THREAD.submit(ray.init, **kwargs).result()
    except Exception as exc:  # Ray's connection errors have many types
        raise ProviderError(f"cannot join the Ray cluster at {address!r} (setting ray_address): "
                            f"{type(exc).__name__}: {exc}") from None
    return ray


def cluster_cpus(ray) -> int:
    """The CPUs the connected cluster offers (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
