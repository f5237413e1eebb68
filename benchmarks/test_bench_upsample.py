"""upsample: sort pixels by class, then each branch's MLP over its pixels plus the bilinear
residual (unrefined), per backend. The sort has no op of its own; it is timed inside."""
import pytest
import torch

import pcsr_kernels
from pcsr import flops as pflops

import workloads as wl


@pytest.mark.parametrize("name,device", wl.BENCH_BACKENDS, ids=[f"{n}-{d}" for n, d in wl.BENCH_BACKENDS])
def test_upsample(problem_for, run_bench, variant, name, device):
    p = problem_for(variant, name, device)
    a = p.args
    fn = wl.under_backend(name, lambda: pcsr_kernels.upsample(p.feat, p.lr, p.classes, a["upsamplers"], a["depths"]))
    torch.testing.assert_close(fn(), p.sr0, atol=1e-4, rtol=1e-4)
    counts = torch.bincount(p.classes.flatten(), minlength=p.num_branches).tolist()
    gflops = sum(pflops.mlp_flops(u.widths, int(n)) for u, n in zip(p.model.upsamplers, counts)) / 1e9
    run_bench(fn, device, f"upsample {p.variant.name} {p.label}", gflops=gflops, size=p.label,
              heavy_fraction=counts[0] / sum(counts))
