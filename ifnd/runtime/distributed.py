"""torch.distributed helpers; each is the identity in a single process.

Launch with ``torchrun --nproc_per_node N -m ifnd pretrain ...``: torchrun sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, and :func:`init` joins the process group
(NCCL for GPU tensors, gloo for CPU tensors).
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as tdist
import torch.distributed.nn.functional as tdist_nn

from ifnd.config import ConfigError


def init(timeout_minutes: float = 30.0) -> tuple[int, int, int]:
    """Join the process group when launched by torchrun; return ``(rank, world_size, local_rank)``.

    ``timeout_minutes`` (``dist.timeout_minutes``): how long a collective waits for every rank.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, 0
    if not tdist.is_initialized():
        # NCCL for CUDA tensors and gloo for the CPU ones (counters, ids, Python objects):
        # NCCL alone refuses CPU tensors.
        tdist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo",
                                 timeout=datetime.timedelta(minutes=timeout_minutes))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return tdist.get_rank(), tdist.get_world_size(), local_rank


def shutdown() -> None:
    """Leave the process group once every rank is done (no-op in one process).

    Called at the end of a successful command, so no rank exits (closing its connections)
    while another still talks to it.
    """
    if world_size() > 1:
        tdist.barrier()
        tdist.destroy_process_group()


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        tdist.barrier()


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x [B, ...]`` of every rank along dim 0 -> ``[world * B, ...]``, no gradient."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    tdist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def local_first(rows: torch.Tensor) -> torch.Tensor:
    """Gathered ``rows [world * B, ...]`` (rank order) with this rank's block of ``B`` moved to the front."""
    if world_size() == 1:
        return rows
    batch, r = rows.shape[0] // world_size(), rank()
    return torch.cat([rows[r * batch:(r + 1) * batch], rows[: r * batch], rows[(r + 1) * batch:]])


def gather_rows(rows: torch.Tensor, ids: torch.Tensor, total: int) -> torch.Tensor:
    """Assemble ``[total, D]`` from each rank's ``rows [n_r, D]`` at dataset indices ``ids [n_r]``.

    Shards may differ in length (they are padded for the collective and the padding is
    dropped), and an index held by several ranks (DistributedSampler-style padding)
    gets one of its identical rows: exact, no normalisation tricks.
    """
    if world_size() == 1:
        out = rows.new_zeros(total, rows.shape[1])
        out[ids] = rows
        return out
    size = -(-total // world_size())
    padded_rows = rows.new_zeros(size, rows.shape[1])
    padded_ids = ids.new_full((size,), -1)
    padded_rows[: len(rows)], padded_ids[: len(ids)] = rows, ids
    all_rows, all_ids = gather(padded_rows), gather(padded_ids)
    keep = all_ids >= 0
    out = rows.new_zeros(total, rows.shape[1])
    out[all_ids[keep]] = all_rows[keep]
    return out


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather`, but gradients flow back to each rank's own part."""
    if world_size() == 1:
        return x
    return torch.cat(tdist_nn.all_gather(x.contiguous()))


def mean(x: torch.Tensor) -> torch.Tensor:
    """Average of a tensor over ranks (for logging a global loss), no gradient."""
    if world_size() == 1:
        return x.detach()
    x = x.detach().clone()
    tdist.all_reduce(x)
    return x / world_size()


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([int(flag)])
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def sum_ints(values: list[int]) -> list[int]:
    """Element-wise sum of integer counters over ranks."""
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.long)
    tdist.all_reduce(t)
    return t.tolist()


def sum_tensor(x: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of a (CPU or device) tensor over ranks; ``x`` itself in one process."""
    if world_size() == 1:
        return x
    x = x.clone()
    tdist.all_reduce(x)
    return x


def local_rows(num_blocks: int, batch: int) -> torch.Tensor:
    """Rows of this rank in a layout of ``num_blocks`` gathered blocks of ``world * batch`` rows."""
    world, r = world_size(), rank()
    return torch.cat([torch.arange(b * world * batch + r * batch, b * world * batch + (r + 1) * batch) for b in range(num_blocks)])


def wrap_ddp(model: torch.nn.Module, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` when there are several ranks, else ``model`` itself.

    Call forward through the result and everything else (momentum encoders, state_dict)
    on ``model``. ``sync_bn`` converts BatchNorm to SyncBatchNorm first (CUDA only), in place
    of ``model``'s children.
    """
    if world_size() == 1:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError("model.sync_bn needs CUDA GPUs; on CPU use --set model.norm=group "
                             "(batch-independent) or turn model.sync_bn off")
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_objects(obj) -> list:
    """Every rank's Python object, in rank order (``[obj]`` in one process)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's Python object on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (this rank's GPU) or ``auto`` (a GPU when one is visible)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use --set device=cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)
