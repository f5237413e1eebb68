"""refine: 3x3 mean on light pixels that touch heavy ones, per backend."""
import pytest
import torch

import pcsr_kernels

import workloads as wl


@pytest.mark.parametrize("name,device", wl.BENCH_BACKENDS, ids=[f"{n}-{d}" for n, d in wl.BENCH_BACKENDS])
def test_refine(problem_for, run_bench, variant, name, device):
    p = problem_for(variant, name, device)
    fn = wl.under_backend(name, lambda: pcsr_kernels.refine(p.sr0, p.classes, p.num_branches))
    torch.testing.assert_close(fn(), p.sr, atol=1e-5, rtol=1e-5)
    run_bench(fn, device, f"refine {p.variant.name} {p.label}", size=p.label)
