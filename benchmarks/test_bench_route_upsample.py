"""route_upsample: the whole upsampling stage (classify, route, upsample, refine) per backend,
beside the authors' loop (official_style.py) on the same inputs."""
import pytest
import torch

from pcsr import flops as pflops

import workloads as wl

CASES = wl.BENCH_BACKENDS + [("official", "cpu"), ("official", "cuda")]


@pytest.mark.parametrize("adaptive", [False, True], ids=["k0", "adm"])
@pytest.mark.parametrize("name,device", CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_route_upsample(problem_for, run_bench, variant, name, device, adaptive):
    p = problem_for(variant, name, device)
    ru = wl.route_upsample_fn(name)
    fn = lambda: ru(p.feat, p.lr, p.out_size, **p.args, k=0.0, adaptive=adaptive, refine=True)  # noqa: E731
    sr, classes = fn()
    if adaptive:
        ref_sr, ref_cls = wl.route_upsample_fn("reference")(p.feat, p.lr, p.out_size, **p.args, adaptive=True)
    else:
        ref_sr, ref_cls = p.sr, p.classes
    ok, msg = wl.agreement(sr, classes, ref_sr, ref_cls)
    assert ok, f"{name} disagrees with the reference: {msg}"
    H, W = p.out_size
    cls = ref_cls if classes is None else classes
    counts = torch.bincount(cls.flatten(), minlength=p.num_branches).tolist()
    gflops = (pflops.mlp_flops(p.model.classifier.widths, H * W)
              + sum(pflops.mlp_flops(u.widths, int(n)) for u, n in zip(p.model.upsamplers, counts))) / 1e9
    run_bench(fn, device, f"route_upsample {'ADM' if adaptive else 'k=0'} {p.variant.name} {p.label}",
              gflops=gflops, size=p.label, heavy_fraction=counts[0] / sum(counts))
