"""World size, rank and the few collectives training needs; a no-op as one process.

Under ``torchrun`` the environment gives ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; the
process group is gloo on CPU and nccl on CUDA.
"""
from __future__ import annotations

import os

import torch


class Dist:
    """World size / rank from torchrun's environment; a no-op when run as one process."""

    def __init__(self, device_pref: str | None):
        import torch.distributed as dist

        self.dist = dist
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = device_pref == "cuda" or (device_pref is None and torch.cuda.is_available())
        if want_cuda:
            if not torch.cuda.is_available():
                from .train import TrainError

                raise TrainError("--device cuda: no CUDA device is available")
            self.device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.active = self.world > 1
        if self.active and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean_and_any(self, value: float, flag: bool) -> tuple[float, bool]:
        """The mean of ``value`` over the ranks, and whether ``flag`` is set on any rank, in
        one all-reduce (so that every rank takes the same decision at the same step)."""
        if not self.active:
            return value, flag
        t = torch.tensor([value, float(flag)], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return float(t[0]) / self.world, bool(t[1] > 0)

    def min_int(self, value: int) -> int:
        """The smallest ``value`` over the ranks."""
        if not self.active:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN)
        return int(t[0])

    def gather_rng(self, state: torch.Tensor) -> list[torch.Tensor]:
        if not self.active:
            return [state]
        t = state.to(self.device)
        out = [torch.empty_like(t) for _ in range(self.world)]
        self.dist.all_gather(out, t)
        return [o.cpu() for o in out]

    def barrier(self) -> None:
        if self.active:
            self.dist.barrier()

    def close(self) -> None:
        if self.active and self.dist.is_initialized():
            # DDP's reducer and autograd all-reduce nodes hold the process group, often inside
            # reference cycles; a group still alive after destroy_process_group is torn down at
            # interpreter exit, where gloo aborts the process. Free them first.
            import gc

            gc.collect()
            self.dist.destroy_process_group()
