"""route: cost-aware argmax, and ADM (per-image 1-D K-means of the heavy mass), per backend."""
import pytest
import torch

import pcsr_kernels

import workloads as wl

IDS = [f"{n}-{d}" for n, d in wl.BENCH_BACKENDS]


@pytest.mark.parametrize("name,device", wl.BENCH_BACKENDS, ids=IDS)
def test_route(problem_for, run_bench, variant, name, device):
    p = problem_for(variant, name, device)
    fn = wl.under_backend(name, lambda: pcsr_kernels.route(p.probs, p.args["cost"], 0.0, False))
    assert torch.equal(fn(), p.classes)
    run_bench(fn, device, f"route {p.variant.name} {p.label}", size=p.label)


@pytest.mark.parametrize("name,device", wl.BENCH_BACKENDS, ids=IDS)
def test_route_adm(problem_for, run_bench, variant, name, device):
    p = problem_for(variant, name, device)
    fn = wl.under_backend(name, lambda: pcsr_kernels.route(p.probs, p.args["cost"], 0.0, True))
    # a histogram K-means may move values that sit on a cluster boundary
    mism = float((fn() != p.classes_adm).double().mean())
    assert mism <= 1e-3, f"ADM decisions differ from the reference on {mism:.1e} of the pixels"
    run_bench(fn, device, f"route ADM {p.variant.name} {p.label}", size=p.label)
