"""sort: HR pixel indices grouped by class, stable (each class's pixels in raster order), as
the per-branch MLPs consume them. The sort has no op of its own (``upsample`` runs it
first), so it is timed here through the functions behind the ops:

- triton: ``pcsr_kernels.triton.sort.sort_by_class``, the counting sort the Triton
  ``upsample`` runs (segments padded with -1 to the MLP block), CUDA only;
- reference: pure PyTorch, ``torch.sort(stable=True)`` of the classes plus a
  ``bincount`` for the segment lengths, on CPU and CUDA.

The cpu backend sorts inside each tile of its ``upsample`` (a few thousand pixels, in
cache) and the CUDA C++ backend inside its kernel launch sequence; neither exposes the
sort alone, so they have no row here: ``test_bench_upsample.py`` times them with it.
"""
import pytest
import torch

import workloads as wl

SORTERS = [("reference", "cpu"), ("triton", "cuda"), ("reference", "cuda")]


def _reference_sort(classes: torch.Tensor, M: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = classes.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    return order, torch.bincount(flat, minlength=M)


def _expected_segments(classes: torch.Tensor, M: int) -> list[torch.Tensor]:
    flat = classes.reshape(-1)
    return [torch.nonzero(flat == j).flatten() for j in range(M)]


@pytest.mark.parametrize("name,device", SORTERS, ids=[f"{n}-{d}" for n, d in SORTERS])
def test_sort(problem_for, run_bench, variant, name, device):
    p = problem_for(variant, name, device)
    M = p.num_branches
    want = _expected_segments(p.classes, M)
    if name == "triton":
        from pcsr_kernels.triton import config
        from pcsr_kernels.triton.sort import sort_by_class

        flat = p.classes.reshape(-1)

        def fn():
            return sort_by_class(flat, M, config.MLP_BLOCK_M)
        idx, seg = fn()
        for j in range(M):
            start, plen = (int(v) for v in seg[j])
            n = want[j].numel()
            assert plen >= n and plen % config.MLP_BLOCK_M == 0, (j, n, plen)
            assert torch.equal(idx[start:start + n].long(), want[j]), f"class {j}: wrong indices"
            assert bool((idx[start + n:start + plen] == -1).all()), f"class {j}: padding is not -1"
    else:
        def fn():
            return _reference_sort(p.classes, M)
        order, counts = fn()
        starts = torch.cumsum(counts, 0) - counts
        for j in range(M):
            seg = order[int(starts[j]):int(starts[j]) + int(counts[j])]
            assert torch.equal(seg, want[j]), f"class {j}: wrong indices"
    counts = torch.bincount(p.classes.flatten(), minlength=M)
    run_bench(fn, device, f"sort {p.variant.name} {p.label}", size=p.label,
              heavy_fraction=float(counts[0]) / max(int(counts.sum()), 1))
