"""The ``cpu`` backend (C++ kernels of ``csrc/cpu``, the ops' ``CPU`` dispatch kernels) against the
reference, through ``torch.ops.pcsr`` with ``use_backend("cpu")``. The case matrix and the
tolerances (justified there) live in ``kernel_cases.py``, shared with the CUDA tests."""
from __future__ import annotations

import pytest
import torch

import pcsr_kernels
from conftest import random_problem
from kernel_cases import (CASES, CLASSIFY_CASES, REFINE_CASES, TOL, check_classify, check_refine, check_route,
                          check_route_adaptive_shapes, check_route_upsample, check_upsample, skip_unless)

BACKEND, DEVICE = "cpu", "cpu"


@pytest.fixture(autouse=True)
def _needs_cpu_backend():
    skip_unless(BACKEND, DEVICE)


@pytest.mark.parametrize("case", list(CASES))
def test_route_upsample(case):
    check_route_upsample(BACKEND, DEVICE, case)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls_hidden,M,h,w,s", CLASSIFY_CASES)
def test_classify(cls_hidden, M, h, w, s, dtype):
    check_classify(BACKEND, DEVICE, cls_hidden, M, h, w, s, dtype)


@pytest.mark.parametrize("M", [2, 3, 4])
@pytest.mark.parametrize("k,adaptive", [(0.0, False), (2.5, False), (50.0, False), (-50.0, False), (0.0, True)])
def test_route(M, k, adaptive):
    check_route(BACKEND, DEVICE, M, k, adaptive)


@pytest.mark.parametrize("M", [2, 3])
def test_route_float64(M):
    check_route(BACKEND, DEVICE, M, 0.5, False, torch.float64)
    check_route(BACKEND, DEVICE, M, 0.0, True, torch.float64)


@pytest.mark.parametrize("M", [2, 3, 4])
def test_route_adaptive_shapes(M):
    check_route_adaptive_shapes(BACKEND, DEVICE, M)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fill", ["random", "one-class", "empty-class"])
def test_upsample(fill, dtype):
    check_upsample(BACKEND, DEVICE, fill, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M,H,W", REFINE_CASES)
def test_refine(M, H, W, dtype):
    check_refine(BACKEND, DEVICE, M, H, W, dtype)


def test_adm_matches_reference_on_a_large_image():
    """ADM's K-means on ~10^5 pixels per image: the kernel forms the centres as the
    reference does (exact counts, float64 sums, one rounding per centre; the first centre
    from ATen's own float64 sum), so the labels agree exactly -- a float32 sum, in any
    order, would move the centres by ~1e-5 and flip the pixels next to the threshold."""
    g = torch.Generator().manual_seed(5)
    for M in (2, 3, 4):
        probs = torch.softmax(torch.randn(2, 300, 410, M, generator=g) * 1.5, -1)
        with pcsr_kernels.use_backend(BACKEND):
            got = pcsr_kernels.route(probs, torch.full((M,), 1.0 / M), 0.0, True)
        want = pcsr_kernels.reference.route_ref(probs, torch.full((M,), 1.0 / M), 0.0, True)
        assert torch.equal(got, want), f"M={M}: {(got != want).sum().item()} labels differ"


def test_results_do_not_depend_on_threads():
    """Every pixel is computed the same way whichever thread takes its tile."""
    p = random_problem(2, 12, 13, 40, 52, 160, [[30, 30], [10]], [10], seed=3)
    old = torch.get_num_threads()
    outs = []
    try:
        for n in (1, max(2, old)):
            torch.set_num_threads(n)
            with pcsr_kernels.use_backend(BACKEND):
                outs.append(pcsr_kernels.route_upsample(**p, k=0.0, adaptive=True))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_noncontiguous_inputs():
    p = random_problem(2, 8, 6, 9, 18, 27, [[24, 24], [10]], [10], seed=4)
    want = pcsr_kernels.reference.route_upsample_ref(**p)
    q = dict(p)
    q["feat"] = p["feat"].transpose(2, 3).contiguous().transpose(2, 3)  # w-major strides
    q["lr"] = p["lr"][:, [2, 1, 0]][:, [2, 1, 0]]
    q["classifier"] = [t.t().contiguous().t() if t.dim() == 2 else t for t in p["classifier"]]
    with pcsr_kernels.use_backend(BACKEND):
        sr, cls = pcsr_kernels.route_upsample(**q)
    assert torch.equal(cls, want[1])
    torch.testing.assert_close(sr, want[0], **TOL[torch.float32])


def _small():
    return random_problem(2, 5, 4, 6, 9, 13, [[8], [4], [4]], [6], seed=7)


def test_opcheck_every_op():
    p = _small()
    args = (p["feat"], p["lr"], list(p["out_size"]), p["classifier"], p["upsamplers"], p["depths"], p["cost"])
    with pcsr_kernels.use_backend(BACKEND):
        torch.library.opcheck(torch.ops.pcsr.route_upsample.default, args + (0.3, False, True))
        torch.library.opcheck(torch.ops.pcsr.route_upsample.default, args + (0.0, True, False))
        probs = pcsr_kernels.classify(p["feat"], p["out_size"], p["classifier"])
        torch.library.opcheck(torch.ops.pcsr.classify.default, (p["feat"], list(p["out_size"]), p["classifier"]))
        torch.library.opcheck(torch.ops.pcsr.route.default, (probs, p["cost"], 0.5, False))
        torch.library.opcheck(torch.ops.pcsr.route.default, (probs, p["cost"], 0.0, True))
        classes = pcsr_kernels.route(probs, p["cost"])
        torch.library.opcheck(torch.ops.pcsr.upsample.default,
                              (p["feat"], p["lr"], classes, p["upsamplers"], p["depths"]))
        sr = pcsr_kernels.upsample(p["feat"], p["lr"], classes, p["upsamplers"], p["depths"])
        torch.library.opcheck(torch.ops.pcsr.refine.default, (sr, classes, 3))


def test_cpu_kernels_are_the_ops_cpu_kernels_registered_in_cpp():
    """The dispatcher's CPU kernel of every pcsr op comes from its C++ source (csrc/cpu/<op>.cpp),
    the schema from the extension (csrc/pcsr.cpp); only the backend choice is Python's."""
    for name in ("route_upsample", "classify", "route", "upsample", "refine"):
        dump = torch._C._dispatch_dump(f"pcsr::{name}")
        lines = {line.split(":", 1)[0]: line for line in dump.splitlines()}
        assert f"csrc/cpu/{name}.cpp:" in lines["CPU"], dump
        assert "csrc/pcsr.cpp:" in lines["debug"], dump
        assert "pcsr_kernels/ops.py:" in lines["BackendSelect"], dump
        assert not any(k.startswith("CPU") and ".py:" in v for k, v in lines.items()), dump
    assert not hasattr(torch.ops, "pcsr_cpu") or not hasattr(torch.ops.pcsr_cpu, "route_upsample")
    with pcsr_kernels.use_backend(BACKEND):
        assert pcsr_kernels.backend.resolved_name("cpu") == "cpu"


def test_cpp_kernel_runs_without_the_python_backend_choice():
    """Called below the Python backend choice (as a libtorch caller calls it), the CPU kernel
    gives what the op gives with the cpu backend, and checks its arguments itself."""
    p = _small()
    below = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    op = torch.ops.pcsr.route_upsample.default
    args = (p["feat"], p["lr"], [9, 13], p["classifier"], p["upsamplers"], p["depths"], p["cost"], 0.2, False, True, None)
    sr, cls = op.redispatch(below, *args)
    with pcsr_kernels.use_backend(BACKEND):
        sr2, cls2 = op(*args)
    assert torch.equal(sr, sr2) and torch.equal(cls, cls2)
    bad = p["classifier"][:-2] + [p["classifier"][-2][:2], p["classifier"][-1][:2]]
    with pytest.raises(ValueError, match=r"classifier: last layer outputs 2 values, expected 3"):
        op.redispatch(below, *args[:3], bad, *args[4:])


# ---- bad inputs: the C++ checks name the argument and print the sizes --------------------

def _bad_cases():
    p = _small()
    f, lr, cl, up, dp, cost = p["feat"], p["lr"], p["classifier"], p["upsamplers"], p["depths"], p["cost"]
    probs = torch.softmax(torch.randn(2, 9, 13, 3), -1)
    classes = torch.zeros(2, 9, 13, dtype=torch.int64)
    sr = torch.randn(2, 3, 9, 13)
    ops = torch.ops.pcsr
    return {
        "half-feat": (lambda: ops.classify(f.half(), [9, 13], [t.half() for t in cl]), TypeError, "Half"),
        "classify-width": (lambda: ops.classify(f, [9, 13], [cl[0][:, :-1], cl[1]] + cl[2:]), ValueError,
                           r"input width must be D\+4 = 9"),
        "classify-out-size": (lambda: ops.classify(f, [0, 13], cl), ValueError, r"out_size must be positive"),
        "classify-empty-feat": (lambda: ops.classify(f[:, :, :0], [9, 13], cl), ValueError, "feat is empty"),
        "route-one-branch": (lambda: ops.route(probs[..., :1], cost[:1]), ValueError, "M >= 2"),
        "route-cost-len": (lambda: ops.route(probs, cost[:2]), ValueError, r"M = 3, got shape \(2,\)"),
        "route-cost-neg": (lambda: ops.route(probs, -cost), ValueError, "finite and > 0"),
        "route-k-nan": (lambda: ops.route(probs, cost, float("nan")), ValueError, "k must be finite"),
        "upsample-class-range": (lambda: ops.upsample(f, lr, classes + 3, up, dp), ValueError,
                                 r"classes must lie in \[0, M\) = \[0, 3\)"),
        "upsample-class-dtype": (lambda: ops.upsample(f, lr, classes.int(), up, dp), ValueError, "int64"),
        "upsample-lr-shape": (lambda: ops.upsample(f, lr[:, :, :3], classes, up, dp), ValueError,
                              r"lr must be \[B, 3, h, w\] = \[2, 3, 4, 6\]"),
        "upsample-depths": (lambda: ops.upsample(f, lr, classes, up, [1, 1]), ValueError, "2\\*sum\\(depths\\)"),
        "upsample-out-width": (lambda: ops.upsample(f, lr, classes, up[:-2] + [up[-2][:2], up[-1][:2]], dp),
                               ValueError, "expected 3"),
        "refine-channels": (lambda: ops.refine(sr[:, :2], classes, 3), ValueError, r"\[B, 3, H, W\]"),
        "refine-classes-shape": (lambda: ops.refine(sr, classes[:, :5], 3), ValueError,
                                 r"classes must be \[B, H, W\] = \[2, 9, 13\]"),
        "refine-branches": (lambda: ops.refine(sr, classes, 1), ValueError, "num_branches must be >= 2"),
        "route-upsample-dtype": (lambda: ops.route_upsample(f.double(), lr.double(), [9, 13],
                                                            [t.double() for t in cl], [t.double() for t in up], dp,
                                                            cost, 0.0, False, True), None, None),
    }


@pytest.mark.parametrize("name", list(_bad_cases()))
def test_bad_inputs(name):
    fn, exc, match = _bad_cases()[name]
    with pcsr_kernels.use_backend(BACKEND):
        if exc is None:  # not an error: float64 is supported
            fn()
            return
        with pytest.raises(exc, match=match):
            fn()


def test_reference_choice_does_not_reach_the_cpp_kernel(monkeypatch):
    """An explicit reference choice runs the reference for CPU tensors although the extension
    registered a CPU kernel: the Python backend choice comes first."""
    p = _small()
    calls = []
    ref = pcsr_kernels.backend.impls("reference")["route_upsample"]
    monkeypatch.setitem(pcsr_kernels.backend.impls("reference"), "route_upsample",
                        lambda *a: calls.append(1) or ref(*a))
    monkeypatch.setitem(pcsr_kernels.backend.impls("cpu"), "route_upsample", lambda *a: pytest.fail("cpu kernel ran"))
    with pcsr_kernels.use_backend("reference"):
        pcsr_kernels.route_upsample(**p)
    monkeypatch.setenv("PCSR_BACKEND", "reference")
    with torch.inference_mode():
        torch.ops.pcsr.route_upsample(p["feat"], p["lr"], [9, 13], p["classifier"], p["upsamplers"], p["depths"],
                                      p["cost"])
    assert len(calls) == 2
