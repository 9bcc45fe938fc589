"""Where the `ray` executor's tasks run: a Ray started inside the run, or a cluster it joins.

`ray.address` "" starts a local Ray with every CPU and GPU of this machine ($RAY_ADDRESS, when set,
names a cluster instead); "auto" joins the cluster `ray start` runs on this machine; `host:port` (or
`ray://host:port`) joins that cluster. Checked before any work (`ray_problems`).
"""
from __future__ import annotations

import logging
import os
import socket

from omegaconf import DictConfig

# Environment a joined cluster's workers need as the driver has it: the data cache, MLflow credentials.
FORWARDED_ENV = ("MEDTRANSFER_", "MLFLOW_")


def ray_address(ray_cfg: DictConfig) -> str:
    """The cluster to join: `ray.address`, else $RAY_ADDRESS; "" = start a local Ray."""
    return str(ray_cfg.address or os.environ.get("RAY_ADDRESS", ""))


def ray_problems(cfg: DictConfig) -> list[str]:
    """With `executor: ray`: Ray installed and the cluster `ray.address` names reachable (one line each)."""
    if cfg.executor != "ray":
        return []
    try:
        import ray
    except ImportError:
        return ["executor: ray, but Ray is not installed (pip install 'medtransfer[ray]')"]
    address = ray_address(cfg.ray)
    if not address or ray.is_initialized():
        return []
    try:
        if address == "auto":
            from ray._private.services import canonicalize_bootstrap_address_or_die
            target = canonicalize_bootstrap_address_or_die(address)
        else:
            target = address.removeprefix("ray://")
        host, _, port = target.rpartition(":")
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as err:  # ConnectionError: no local cluster for "auto"
        reason = " ".join(str(err).split()) or type(err).__name__
        return [f"ray.address: {address}: no Ray cluster reachable ({reason})"]
    return []


def connect(ray_cfg: DictConfig) -> bool:
    """Start or join Ray unless this process already has a Ray session; True when this call did it
    (so the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    env = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV)}
    address = ray_address(ray_cfg)
    local = {} if address else {"include_dashboard": False}  # a joined cluster keeps its own dashboard
    ray.init(address=address or "local", **local, log_to_driver=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": env})
    return True
