"""Hardware selection, in one place.

``device: auto`` is resolved once here; every other module receives a
:class:`torch.device`.  The faiss GPU probe returns 0 on a CPU build of faiss
instead of raising (as faiss's own ``get_num_gpus`` does), so the same code runs
everywhere; forcing the GPU on a machine without one is an error, never a
silent fallback.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

from .errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(spec: str = "auto") -> torch.device:
    """Return the torch device for ``spec`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Raises
    ------
    ConfigError
        If CUDA is requested but not available.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {spec!r} requested but CUDA is not available; use device=cpu or auto")
    return dev


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Mixed-precision dtype for ``device`` (``None`` = full fp32).

    ``auto`` picks bf16 on CUDA devices that support it, fp16 on older GPUs and
    fp32 on the CPU (CPU autocast is slower than fp32 for small models).
    """
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise ConfigError(f"train.precision={precision} needs a CUDA device; use fp32 or auto on CPU")
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def faiss_num_gpus() -> int:
    """Number of GPUs faiss can use (0 on a CPU-only build, never raises)."""
    try:
        import faiss
    except ImportError:
        return 0
    get = getattr(faiss, "get_num_gpus", None)
    if get is None:
        return 0
    try:
        return int(get())
    except Exception:  # a CPU build without GPU symbols
        return 0


def use_faiss_gpu(setting: Literal["auto", "on", "off"] = "auto") -> bool:
    """Decide whether faiss indexes go on the GPU.

    Raises
    ------
    ConfigError
        If ``setting == 'on'`` and faiss sees no GPU (no silent fallback).
    """
    n = faiss_num_gpus()
    if setting == "off":
        return False
    if setting == "on" and n == 0:
        raise ConfigError(
            "detect.faiss_gpu=on but faiss sees no GPU; install faiss-gpu on a CUDA host "
            "(pip install 'anomaly-ssl[gpu]') or set detect.faiss_gpu=auto"
        )
    return n > 0
