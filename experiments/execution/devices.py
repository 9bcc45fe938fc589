"""One study run on several devices of a machine: this process orchestrates, one follower process
per further device only takes part in Lightning's fits and predicts (DDP).

The main process (rank 0) alone reads and writes the MLflow store, takes locks and writes caches.
It starts the followers (`experiments.follower`) with the environment Lightning reads for processes
it did not launch itself, joins them in a process group, and before each fit or predict sends them
the job (`DeviceGroup.run`) over a control group that waits as long as the main process needs
between jobs (e.g. for a model another study process is training). Followers take no locks, so no
process can wait on a lock while its peers wait for it in a collective operation.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from typing import Protocol

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from ..design.resources import backend, world_size

CONTROL_TIMEOUT = timedelta(days=30)  # between jobs followers wait for the main process this long
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK")


class Job(Protocol):
    distributed: bool  # every process of the group runs it (else this process alone)

    def run(self, **local): ...


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DeviceGroup:
    """The processes of a study run (a context); `run(job)` does a job here and, when the job is
    distributed, on every follower too. With one device it is this process alone."""

    def __init__(self, cfg: DictConfig):
        self.world, self.backend = world_size(cfg), backend(cfg)
        self.followers: list[subprocess.Popen] = []
        self.control = None
        self.saved_env: dict[str, str | None] = {}

    def __enter__(self) -> "DeviceGroup":
        if self.world > 1:
            self._start()
        _ACTIVE.append(self)
        return self

    def __exit__(self, kind, error, trace) -> None:
        _ACTIVE.remove(self)
        if self.world > 1:
            self._stop(clean=kind is None)

    def run(self, job: Job, **local):
        """`job.run(**local)` here, after sending `job` to the followers when it is distributed."""
        if self.world > 1 and job.distributed:
            dist.broadcast_object_list([job], src=0, group=self.control)
        return job.run(**local)

    def _start(self) -> None:
        launch = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(self.world),
                  "NODE_RANK": "0"}
        for rank in range(1, self.world):
            env = {**os.environ, **launch, "LOCAL_RANK": str(rank), "RANK": str(rank),
                   "MEDTRANSFER_BACKEND": self.backend}
            self.followers.append(subprocess.Popen(  # own session: a Ctrl-C reaches the main process only
                [sys.executable, "-m", "experiments.execution.follower"], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True))
        self.saved_env = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
        os.environ.update({**launch, "LOCAL_RANK": "0", "RANK": "0"})
        try:
            dist.init_process_group(self.backend, rank=0, world_size=self.world)
            self.control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        except BaseException:
            self._stop(clean=False)
            raise

    def _stop(self, clean: bool) -> None:
        try:
            if clean:
                dist.broadcast_object_list([None], src=0, group=self.control)
            for follower in self.followers:
                try:
                    follower.wait(timeout=60 if clean else 0.1)
                except subprocess.TimeoutExpired:
                    follower.kill()
                    follower.wait()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
            for name, value in self.saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


_ACTIVE: list[DeviceGroup] = []


def active() -> DeviceGroup | None:
    """The device group of the study running in this process, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


def run_job(job: Job, **local):
    """`job` run by the active device group, or here alone when there is none."""
    group = active()
    return group.run(job, **local) if group is not None else job.run(**local)
