"""``pcsr upscale`` across processes: ``torchrun --nproc_per_node N -m pcsr upscale IN -o OUT``.

Each process (rank r of N, from torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``) takes
files r, r+N, r+2N, ... of the same sorted plan, on ``cuda:LOCAL_RANK`` where GPUs exist; the
results are gathered on every rank (rank 0 prints the summary). Only small Python objects
travel, so the group is gloo even between GPUs. Run as one plain process, every call is a
no-op.
"""
from __future__ import annotations

import os

import torch


class Shard:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        if self.active:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, pref: str | None) -> torch.device:
        """``pref`` (cpu / cuda / None = cuda if available) for this rank: one GPU per local rank."""
        want_cuda = pref == "cuda" or (pref is None and torch.cuda.is_available())
        if want_cuda and torch.cuda.is_available():
            d = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(d)
            return d
        return torch.device("cuda" if want_cuda else "cpu")  # cuda unavailable: the caller says so

    def take(self, items: list) -> list:
        """This rank's share: items r, r+N, ..."""
        return items[self.rank::self.world]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.active:
            import gc

            import torch.distributed as dist

            if dist.is_initialized():
                # a group still referenced at interpreter exit is torn down there, where gloo
                # aborts the process: drop every reference first
                gc.collect()
                dist.destroy_process_group()
