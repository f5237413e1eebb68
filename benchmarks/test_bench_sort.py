"""sort: HR pixel indices grouped by class, as the per-branch MLPs consume them. It has no
op of its own (``upsample`` runs it first), so it is timed here through the functions
behind the ops:

- triton: the dense pass of the Triton ``upsample`` on given classes
  (``pcsr_kernels.triton.dense``, mode 1): compact index lists of every class but the
  lightest (whose MLP the same pass runs densely, included in the time), CUDA only; each
  list must hold exactly its class's pixels (their order follows the blocks' atomics);
- reference: pure PyTorch, ``torch.sort(stable=True)`` of the classes plus a
  ``bincount`` for the segment lengths, on CPU and CUDA.

The cpu backend sorts inside each tile of its ``upsample`` (a few thousand pixels, in
cache) and the CUDA C++ backend inside its kernel launch sequence; neither exposes the
sort alone, so they have no row here: ``test_bench_upsample.py`` times them with it.
"""
import pytest
import torch

import pcsr_kernels
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
        from pcsr_kernels.triton import pack
        from pcsr_kernels.triton.dense import launch_dense, list_buffers

        a = p.args
        B, D, h, w = p.feat.shape
        H, W = p.classes.shape[1:]
        N = B * H * W
        mlps = [pack.packed_tc(br, D) for br in pcsr_kernels.validate.split_branches(a["upsamplers"], a["depths"])]
        g = pack.geometry(h, w, H, W, p.feat.device)
        Pu, cols = pack.lr_precompute(p.feat, [m.base for m in mlps])
        out = torch.empty(B, 3, H, W, device=device)
        cls8 = torch.empty(B, H, W, dtype=torch.uint8, device=device)
        lr32 = p.lr.float().contiguous()

        def fn():
            counts, lists = list_buffers(M, N, False, p.feat.device)
            launch_dense(1, Pc=None, cls_mlp=None, Pu=Pu, light=mlps[-1], light_col=cols[-1], g=g, B=B, h=h, w=w,
                         H=H, W=W, M=M, prec="ieee", idx64=False, lr=lr32, out=out, cls_in=p.classes, cls8=cls8,
                         counts=counts, lists=lists)
            return counts, lists
        counts, lists = fn()
        for j in range(M - 1):
            n = int(counts[j])
            buf = lists[(j // 2) * N:(j // 2 + 1) * N]
            got = buf[:n] if j % 2 == 0 else buf[N - n:]
            assert n == want[j].numel(), f"class {j}: {n} listed, {want[j].numel()} expected"
            assert torch.equal(got.long().sort().values, want[j]), f"class {j}: wrong indices"
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
