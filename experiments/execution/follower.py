"""A follower process of a study's device group (`devices.DeviceGroup`): joins the process group,
then runs each job the main process sends until it sends None. Run as
`python -m experiments.execution.follower BACKEND RANK WORLD PORT` by `DeviceGroup` only."""
from __future__ import annotations

import os
import sys
import threading
import time

import torch.distributed as dist

from medcommon.console import quiet_third_party
from .devices import CONTROL_TIMEOUT, Process, join


def exit_with_parent() -> None:
    """End this process when the main process is gone (killed, it cannot send the last None)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(backend: str, rank: str, world: str, port: str) -> None:
    with quiet_third_party():
        follow(backend, rank, world, port)


def follow(backend: str, rank: str, world: str, port: str) -> None:
    """Join the device group, then take part in each job the main process sends until it sends none."""
    exit_with_parent()
    process = Process(int(rank), int(world), int(port))
    join(backend, process.rank, process.world, process.port)
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    while True:
        box = [None]
        dist.broadcast_object_list(box, src=0, group=control)
        if box[0] is None:
            break
        box[0].run(process)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
