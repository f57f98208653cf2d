"""Connecting to Ray: a local instance on this machine by default, or a running cluster.

Ray's own connect to a dead address retries for a long time before failing with a traceback, so an
address is first checked with a plain TCP connection and refused in one sentence.
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

from ..config import ConfigError

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # a clone run without installing: workers import this copy
CLUSTER_HINT = "start one with `ray start --head` on the head node, or leave --ray-address out for a local instance"


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of 'host:port' or 'ray://host:port'; None for 'auto' (Ray finds it)."""
    if address == "auto":
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    return host, int(port)


def check_reachable(address: str, timeout: float = 3.0) -> None:
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({err.strerror or err}); {CLUSTER_HINT}") from None


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[dict]:
    """Ray connected for the duration; yields the cluster's resources ({"CPU": 2.0, "GPU": ...}).

    Without an address it starts a local instance with this machine's cores and
    stops it at the end; with one it connects to that cluster and leaves it running."""
    try:
        import ray
    except ImportError:
        raise ConfigError("batch runs need Ray: pip install 'ray>=2.9'") from None
    if address:
        check_reachable(address)
    if ray.is_initialized():  # an embedding program (or a test) already connected: use it as it is
        yield dict(ray.cluster_resources())
        return
    kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True, "logging_level": "error"}
    if address:
        kwargs["address"] = address
    else:  # "local": a new instance even where `ray start` left a cluster running (ray.init would join it)
        kwargs["address"], kwargs["num_cpus"] = "local", os.cpu_count() or 1
        pythonpath = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": pythonpath}}
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise ConfigError(f"cannot connect to the Ray cluster at {address or 'a local instance'} ({err}); {CLUSTER_HINT}") from None
    try:
        yield dict(ray.cluster_resources())
    finally:
        ray.shutdown()
