"""One study run on several devices of a machine: this process orchestrates, one follower process
per further device only takes part in Lightning's fits and predicts (DDP).

A launcher of our own, kept small, rather than Lightning's: Lightning's launcher would run the whole
command again in every process, and every process would then have to agree on each decision the
store makes (what is trained already, which lock is free). Here the main process (rank 0) alone
reads and writes the MLflow store, takes locks and writes caches. `DeviceGroup` starts the
followers (`experiments.execution.follower`, rank, world size and address on their command line),
joins them in a process group, and before each fit or predict sends them the job (`run`) over a
control group that waits as long as the main process needs between jobs (e.g. for a model another
study process is training). Followers take no locks, so no process can wait on a lock while its
peers wait for it in a collective operation. No process's environment is rewritten: every Trainer
gets the group's `GroupEnvironment` as its cluster environment, so Lightning launches nothing.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta
from typing import Callable, Protocol

import pytorch_lightning as pl
import torch.distributed as dist
from lightning_fabric.plugins.environments import ClusterEnvironment
from omegaconf import DictConfig

from datamodules import DomainData

from ..design.resources import backend, world_size

CONTROL_TIMEOUT = timedelta(days=30)  # between jobs followers wait for the main process this long
ADDRESS = "127.0.0.1"


class GroupEnvironment(ClusterEnvironment):
    """A process of a device group as Lightning sees it: its rank in a group that exists already."""

    def __init__(self, rank: int, world: int, port: int):
        super().__init__()
        self.rank, self.world, self.port = rank, world, port

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return ADDRESS

    @property
    def main_port(self) -> int:
        return self.port

    @staticmethod
    def detect() -> bool:
        return False

    def world_size(self) -> int:
        return self.world

    def set_world_size(self, size: int) -> None:
        if size != self.world:
            raise ValueError(f"a Trainer asked for {size} processes in a device group of {self.world}")

    def global_rank(self) -> int:
        return self.rank

    def set_global_rank(self, rank: int) -> None:
        pass  # fixed when the group is made

    def local_rank(self) -> int:
        return self.rank

    def node_rank(self) -> int:
        return 0


class Stop(pl.Callback):
    """Stops a fit or predict at its next batch, as a Ctrl-C would, once `asked()` says so."""

    def __init__(self, asked: Callable[[], bool]):
        self.asked = asked

    def check(self, *_, **__) -> None:
        if self.asked():
            raise KeyboardInterrupt

    on_train_batch_start = on_validation_batch_start = on_predict_batch_start = check


class Process:
    """What a job sees of the process it runs in: its rank, what its Trainers need (the plugins that
    put Lightning in the group; a `Stop` when something other than Ctrl-C may ask the process to
    stop, `stop`), and the data (the main process passes its own; a follower reads it, once). `kept`:
    what the process's jobs build once and reuse (its predict Trainers)."""

    def __init__(self, rank: int = 0, world: int = 1, port: int = 0, stop: Callable[[], bool] | None = None):
        self.rank, self.world, self.port, self.stop = rank, world, port, stop
        self.read: dict[str, DomainData] = {}
        self.kept: dict = {}

    def plugins(self, distributed: bool) -> list:
        return [GroupEnvironment(self.rank, self.world, self.port)] if distributed and self.world > 1 else []

    def callbacks(self) -> list[pl.Callback]:
        return [Stop(self.stop)] if self.stop is not None else []

    def run(self, job: "Job", **local):
        """`job.run(self, **local)` in this process."""
        return job.run(self, **local)

    def data(self, data_cfg: dict) -> DomainData:
        """The domain data a `data` config names, read once by this process."""
        name = repr(sorted(data_cfg.items()))
        if name not in self.read:
            self.read[name] = DomainData(data_cfg).prepare()
        return self.read[name]


class Job(Protocol):
    distributed: bool  # every process of the group runs it (else this process alone)

    def run(self, process: Process, **local): ...


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((ADDRESS, 0))
        return sock.getsockname()[1]


class DeviceGroup(Process):
    """The processes of a study run (a context), as the main process sees them; `run(job)` does a
    job here and, when the job is distributed, on every follower too. With one device it is this
    process alone."""

    def __init__(self, cfg: DictConfig, stop: Callable[[], bool] | None = None):
        super().__init__(0, world_size(cfg), 0, stop)
        self.backend = backend(cfg)
        self.followers: list[subprocess.Popen] = []
        self.control = None

    def __enter__(self) -> "DeviceGroup":
        if self.world > 1:
            self._start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.world > 1:
            self._stop(clean=kind is None)

    def run(self, job: Job, **local):
        """`job.run(self, **local)` here, after sending `job` to the followers when it is distributed."""
        if self.world > 1 and job.distributed:
            dist.broadcast_object_list([job], src=0, group=self.control)
        return super().run(job, **local)

    def _start(self) -> None:
        self.port = free_port()
        for rank in range(1, self.world):
            self.followers.append(subprocess.Popen(  # own session: a Ctrl-C reaches the main process only
                [sys.executable, "-m", "experiments.execution.follower", self.backend, str(rank), str(self.world),
                 str(self.port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True))
        try:
            join(self.backend, 0, self.world, self.port)
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


def join(backend_name: str, rank: int, world: int, port: int) -> None:
    """This process into the group's default process group."""
    dist.init_process_group(backend_name, init_method=f"tcp://{ADDRESS}:{port}", rank=rank, world_size=world)
