"""CPU threads of each process, set explicitly (``cpu_threads``).

``torchrun`` sets ``OMP_NUM_THREADS=1`` in every process it starts unless told otherwise, so
CPU-side work (faiss k-means, a kNN monitor or k-means on a CPU device) would silently run on
one core per process. This sets torch's (and faiss') thread count on purpose and says so in one
line when it stays at 1 because of that variable.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def threads_for(requested: int, environ: dict[str, str], cores: int) -> tuple[int, str | None]:
    """The thread count of this process and a warning to print (or None).

    Args:
        requested: ``cpu_threads``; > 0 is used as given; 0 picks ``OMP_NUM_THREADS`` when set,
            else the cores divided by this node's processes (``LOCAL_WORLD_SIZE``).
        environ: the process environment; cores: CPU cores of the machine.
    """
    if requested < 0:
        raise ValueError(f"cpu_threads must be >= 0 (0: automatic), got {requested}")
    if requested:
        return requested, None
    per_process = max(1, cores // int(environ.get("LOCAL_WORLD_SIZE", 1)))
    if "OMP_NUM_THREADS" not in environ:
        return per_process, None
    threads = max(1, int(environ["OMP_NUM_THREADS"]))
    if threads == 1 and per_process > 1 and "WORLD_SIZE" in environ:
        return 1, (f"OMP_NUM_THREADS=1 (torchrun's default): CPU-side work runs on 1 thread per process; "
                   f"set --set cpu_threads={per_process} (or OMP_NUM_THREADS) to use this node's {cores} cores")
    return threads, None


def set_cpu_threads(requested: int) -> int:
    """Apply :func:`threads_for` to torch and faiss in this process; returns the thread count."""
    threads, warning = threads_for(requested, dict(os.environ), os.cpu_count() or 1)
    if warning is not None:
        log.warning(warning)
    if threads != torch.get_num_threads():  # setting even the same count changes some kernels' summation order
        torch.set_num_threads(threads)
    try:
        import faiss  # noqa: PLC0415  (faiss is optional on GPU machines)
    except ImportError:
        return threads
    faiss.omp_set_num_threads(threads)
    return threads
