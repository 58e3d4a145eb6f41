"""Distributed data-parallel helpers (``torchrun``), in one place.

``torchrun --nproc_per_node N -m anomaly_ssl pretrain ...`` starts N processes
with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR`` set;
:func:`init_distributed` reads them once and joins the process group (nccl on
GPUs, gloo on the CPU).  Without those variables everything runs as a single
process and every helper here is a no-op, so the same code serves both cases.
Only rank 0 writes files, logs progress and draws progress bars.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from .device import resolve_device
from .errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_distributed(device_spec: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Join the torchrun process group if there is one and pick this process's device.

    Parameters
    ----------
    device_spec : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; under torchrun a CUDA device
        becomes ``cuda:LOCAL_RANK``.
    timeout_s : float
        Collective-operation timeout.

    Returns
    -------
    DistInfo
    """
    device = resolve_device(device_spec)
    world = env_world_size()
    if world <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s); "
                "lower torchrun --nproc_per_node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        log.info("joined process group: rank %d of %d (%s)", rank, world, backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def cleanup() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise sum of ``values`` over ranks (returned; the input is unchanged for one process)."""
    if not info.enabled:
        return values
    out = values.detach().clone().to(info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(values.device)


@contextlib.contextmanager
def cpu_threads(n: int, device: torch.device) -> Iterator[None]:
    """Use ``n`` intra-op threads on the CPU inside the block (0 or a CUDA device: unchanged)."""
    if n <= 0 or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item, equal counts on every rank.

    The tail that does not divide evenly is dropped, so all ranks run the same
    number of steps (DDP requires it).
    """
    if not info.enabled:
        return list(items)
    usable = len(items) - len(items) % info.world_size
    return list(items[info.rank : usable : info.world_size])
