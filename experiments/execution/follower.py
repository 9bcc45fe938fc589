"""A follower process of a study's device group (`experiments.ranks`): joins the process group,
then runs each job the main process sends until it sends None. Run as `python -m experiments.follower`
by `ranks.DeviceGroup` only."""
from __future__ import annotations

import os
import threading
import time

import torch.distributed as dist

from ..console import quiet_third_party
from .devices import CONTROL_TIMEOUT


def exit_with_parent() -> None:
    """End this process when the main process is gone (killed, it cannot send the last None)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    quiet_third_party()
    exit_with_parent()
    dist.init_process_group(os.environ["MEDTRANSFER_BACKEND"], rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    while True:
        box = [None]
        dist.broadcast_object_list(box, src=0, group=control)
        if box[0] is None:
            break
        box[0].run()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
