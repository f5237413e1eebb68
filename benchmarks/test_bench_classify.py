"""classify: nearest-feature lookup + classifier MLP + softmax, per backend."""
import pytest
import torch

import pcsr_kernels
from pcsr import flops as pflops

import workloads as wl


@pytest.mark.parametrize("name,device", wl.BENCH_BACKENDS, ids=[f"{n}-{d}" for n, d in wl.BENCH_BACKENDS])
def test_classify(problem_for, run_bench, variant, name, device):
    p = problem_for(variant, name, device)
    H, W = p.out_size
    fn = wl.under_backend(name, lambda: pcsr_kernels.classify(p.feat, p.out_size, p.args["classifier"]))
    torch.testing.assert_close(fn(), p.probs, atol=1e-5, rtol=1e-4)
    gflops = pflops.mlp_flops(p.model.classifier.widths, H * W) / 1e9
    run_bench(fn, device, f"classify {p.variant.name} {p.label}", gflops=gflops, size=p.label)
