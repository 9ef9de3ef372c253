"""Run a function on several local processes joined in a process group (benchmarks and tests).

``torchrun`` launches whole commands; this runs one Python function per rank, as
``fn(*args)`` with the group already joined (gloo on CPU, gloo + NCCL when ``cuda``), and
returns every rank's result. Results travel as files written with :func:`torch.save`.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, world: int, port: int, threads: int, cuda: bool, out: str, fn: Callable[..., Any],
            args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    if cuda:
        torch.cuda.set_device(rank % torch.cuda.device_count())
    tdist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        torch.save(fn(*args), Path(out) / f"rank{rank}.pt")
    finally:
        tdist.destroy_process_group()


def run_ranks(fn: Callable[..., Any], nproc: int, *args: Any, threads: int = 1, cuda: bool = False) -> list[Any]:
    """``[fn(*args) on rank 0, ..., on rank nproc - 1]``, each in its own process of one group.

    Args:
        fn: a module-level function (it is pickled to the spawned processes); it may use
            :mod:`ifnd.runtime.distributed` freely.
        threads: torch CPU threads of each process.
        cuda: join with NCCL for CUDA tensors too, and give rank r the GPU ``r % device_count``.
    """
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(_worker, args=(nproc, _free_port(), threads, cuda, out, fn, args), nprocs=nproc,
                           start_method="spawn")
        return [torch.load(Path(out) / f"rank{rank}.pt", weights_only=False) for rank in range(nproc)]
