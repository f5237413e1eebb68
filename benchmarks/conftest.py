"""pytest-benchmark microbenchmarks of the pcsr ops, one file per op.

    pytest benchmarks/ --benchmark-only                       # CPU everywhere, GPU when present
    pytest benchmarks/ --benchmark-only --bench-size 2k --bench-variants carn
    pytest benchmarks/ --benchmark-only --benchmark-json out.json

They are not part of the test run: the default ``testpaths`` is ``tests/``, and without
``--benchmark-only`` every item here is skipped. Each benchmark checks its result against
the pure-PyTorch reference on the same inputs before it times anything. Inputs are those
of ``compare.py`` (``workloads.py``): the variant's model (the authors' weights where
present), its backbone's features of a natural image at the chosen output size.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import pytest  # noqa: E402
import torch  # noqa: E402

import pcsr_kernels  # noqa: E402
from pcsr_kernels import backend as kbackend  # noqa: E402

import workloads as wl  # noqa: E402

def pytest_addoption(parser):
    g = parser.getgroup("pcsr benchmarks")
    g.addoption("--bench-size", default="512x384", help="output size: 1k/2k/4k/8k or WxH (default 512x384)")
    g.addoption("--bench-variants", default="fsrcnn,carn,srresnet", help="variants (default all three)")
    g.addoption("--bench-rounds", type=int, default=5, help="timed rounds per benchmark (default 5)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="microbenchmark: run with `pytest benchmarks/ --benchmark-only`")
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


def pytest_generate_tests(metafunc):
    if "variant" in metafunc.fixturenames:
        keys = [v.strip() for v in metafunc.config.getoption("bench_variants").split(",") if v.strip()]
        metafunc.parametrize("variant", [wl.parse_variant(k).key for k in keys])


@dataclass
class Problem:
    """Inputs of the ops for one variant at the bench size, and the reference's results."""
    variant: wl.Variant
    device: torch.device
    model: object
    feat: torch.Tensor
    lr: torch.Tensor           # normalised, as the ops take it
    out_size: tuple
    args: dict                 # classifier, upsamplers, depths, cost
    probs: torch.Tensor
    classes: torch.Tensor
    classes_adm: torch.Tensor
    sr0: torch.Tensor          # unrefined
    sr: torch.Tensor           # refined
    label: str

    @property
    def num_branches(self) -> int:
        return len(self.args["depths"])


_problems: dict = {}


def _skip_unless_available(name: str, device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if name in ("official",):
        if wl.official_loop() is None:
            pytest.skip(wl.official_error())
        return
    ok, why = kbackend.availability(name, device)
    if not ok:
        pytest.skip(f"backend {name} not available for {device} tensors: {why}")


@pytest.fixture
def problem_for(request):
    """``problem_for(variant, backend, device) -> Problem`` (skips when the backend or the
    device is missing). Problems are built once per session and device."""
    size = request.config.getoption("bench_size")

    def get(variant: str, name: str, device: str) -> Problem:
        _skip_unless_available(name, device)
        key = (variant, device, size)
        if key not in _problems:
            _problems[key] = _build(wl.VARIANTS[variant], torch.device(device), size)
        return _problems[key]
    return get


@torch.no_grad()
def _build(v: wl.Variant, device: torch.device, size: str) -> Problem:
    label, H, W = wl.parse_size(size)
    model, src = wl.build_pcsr(v, "auto", device)
    lr, _ = wl.make_lr(H // wl.SCALE, W // wl.SCALE, device)
    if src == "random":
        wl.calibrate_heavy_fraction(model, lr, 0.5)
    x = model.normalise(lr)
    feat = model._inference_backbone()(x)
    args = {k: ([t.detach() for t in a] if isinstance(a, list) and a and torch.is_tensor(a[0]) else a)
            for k, a in wl.model_args(model, feat).items()}  # no autograd bookkeeping in the timed calls
    with pcsr_kernels.use_backend("reference"):
        probs = pcsr_kernels.classify(feat, (H, W), args["classifier"])
        classes = pcsr_kernels.route(probs, args["cost"], 0.0, False)
        classes_adm = pcsr_kernels.route(probs, args["cost"], 0.0, True)
        sr0 = pcsr_kernels.upsample(feat, x, classes, args["upsamplers"], args["depths"])
        sr = pcsr_kernels.refine(sr0, classes, len(args["depths"]))
    return Problem(v, device, model, feat, x, (H, W), args, probs, classes, classes_adm, sr0, sr, label)


@pytest.fixture
def run_bench(benchmark, request):
    """``run_bench(fn, group, **extra)``: time ``fn`` (synchronising the GPU inside the
    timed call) for ``--bench-rounds`` rounds after one warm-up round."""
    rounds = request.config.getoption("bench_rounds")

    def run(fn, device, group: str, **extra):
        dev = torch.device(device)

        def call():
            out = fn()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return out
        benchmark.group = group
        benchmark.extra_info.update(extra)
        with torch.no_grad():
            return benchmark.pedantic(call, rounds=rounds, warmup_rounds=1, iterations=1)
    return run
