"""Streams of frame batches through a model with the uploads overlapped: while the GPU
computes batch t, batch t+1 is copied from pinned host memory on a second stream, and
batch t-1's result is copied back on that stream too.

    run = model.compile_for((4, 3, 540, 960), scale=4)
    for sr, classes in stream_batches(lambda x: run(x, copy=False), batches, "cuda"):
        encode(sr)                      # host tensors, in order

``batches`` yields host tensors (any dtype: uint8 frames upload 4x fewer bytes than
float32; ``prepare`` turns the device copy into the model's input, e.g.
``lambda u8: u8.permute(0, 3, 1, 2).float().div_(255)``). ``fn`` takes the device batch and
returns a tensor or a tuple of tensors; what it returns may be overwritten by its next call
(a CUDA graph's static outputs): each result is copied on the device (a few tens of
microseconds at 4K) before ``fn`` runs again.

How the overlap is ordered, per batch t:

    host:     copy batch t into pinned memory -> (copy stream) upload -> event `up`
    compute:  wait `up` -> prepare, fn, copy of the result -> event `done`
    copy:     wait `done` -> download into pinned memory -> event `down`
    host:     yield batch t-1's result once its `down` event completed

so the host decodes and stages batch t+1 while the GPU runs batch t, and the download of
batch t runs beside the compute of batch t+1. Pinned buffers come from PyTorch's caching
host allocator, which reuses a block only once the copies that use it have completed; the
yielded host tensors belong to the caller. On the CPU the batches simply run one after
another (nothing to overlap), with the same results.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

__all__ = ["stream_batches"]


def _tensors(out) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        return tuple(out)
    raise TypeError(f"stream_batches: fn must return a tensor or a tuple of tensors, got {type(out).__name__}")


def _check_batch(t: int, batch) -> None:
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"stream_batches: batch {t} is a {type(batch).__name__}, expected a tensor")


def stream_batches(fn: Callable, batches: Iterable[torch.Tensor], device, *,
                   prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   to_host: bool = True) -> Iterator:
    """Yield ``fn(prepare(batch on device))`` for every host batch, in order, as host tensors
    (``to_host=False``: device tensors). The result has ``fn``'s structure: a tensor, or a
    tuple of tensors."""
    device = torch.device(device)
    if device.type != "cuda":
        for t, batch in enumerate(batches):
            _check_batch(t, batch)
            x = batch.to(device)
            out = fn(prepare(x) if prepare is not None else x)
            _tensors(out)
            yield out
        return
    yield from _cuda_stream(fn, batches, device, prepare, to_host)


def _cuda_stream(fn, batches, device, prepare, to_host):
    compute = torch.cuda.current_stream(device)
    copy = torch.cuda.Stream(device)
    pending = None  # (event `down`, results, single) of the previous batch
    for t, batch in enumerate(batches):
        _check_batch(t, batch)
        staged = torch.empty(batch.shape, dtype=batch.dtype, pin_memory=True)
        staged.copy_(batch)
        with torch.cuda.stream(copy):
            x = staged.to(device, non_blocking=True)
        up = torch.cuda.Event()
        up.record(copy)
        compute.wait_event(up)
        x.record_stream(compute)  # allocated on the copy stream, read on the compute stream
        out = fn(prepare(x) if prepare is not None else x)
        single = isinstance(out, torch.Tensor)
        outs = tuple(o.clone() for o in _tensors(out))  # fn's buffers are free for its next call
        done = torch.cuda.Event()
        done.record(compute)
        if to_host:
            with torch.cuda.stream(copy):
                copy.wait_event(done)
                res = tuple(torch.empty(o.shape, dtype=o.dtype, pin_memory=True).copy_(o, non_blocking=True)
                            for o in outs)
                for o in outs:
                    o.record_stream(copy)
            down = torch.cuda.Event()
            down.record(copy)
        else:
            res, down = outs, done
        if pending is not None:
            yield _finish(*pending)
        pending = (down, res, single)
    if pending is not None:
        yield _finish(*pending)


def _finish(down, res, single):
    down.synchronize()
    return res[0] if single else res
