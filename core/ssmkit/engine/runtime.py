"""Process-level set-up: seeds and determinism, device and autocast choice, torchrun/DDP."""

from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this set before its first use to be deterministic on GPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is present, else CPU; anything else is checked."""
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"train.device={spec!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={spec!r} but no CUDA device is available; use train.device=cpu")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp``: bf16 on CUDA under "auto", never on CPU unless asked."""
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    raise ValueError(f"train.amp={mode!r}; expected auto, bf16 or off")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group: NCCL for CUDA devices, gloo for CPU."""
    if not info.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU ones.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_str(info: DistInfo, value: str) -> str:
    """Rank 0's ``value`` on every rank (run ids are timestamps, which ranks would not agree on)."""
    if not (info.enabled and dist.is_initialized()):
        return value
    data = torch.zeros(256, dtype=torch.uint8)
    raw = value.encode()[:256]
    data[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    data = data.to(_comm_device())
    dist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).rstrip(b"\0").decode()


def broadcast_flag(info: DistInfo, value: bool) -> bool:
    """Rank 0's boolean on every rank (a decision made from metrics only rank 0 computed)."""
    if not (info.enabled and dist.is_initialized()):
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int64, device=_comm_device())
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_reduce_mean(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (every rank must call this at the same step)."""
    if not (info.enabled and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.cpu().tolist())}


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "DistInfo", "all_reduce_mean", "amp_dtype", "barrier", "broadcast_flag", "broadcast_str", "dist_from_env",
    "init_distributed", "resolve_device", "seed_everything", "shutdown_distributed",
]
