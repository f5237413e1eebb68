"""The Triton backend against the reference (pcsr_kernels.reference.*_ref), through
``torch.ops.pcsr`` with ``use_backend("triton")``.

Without a GPU the kernels run on CPU tensors through Triton's interpreter (conftest sets
``TRITON_INTERPRET=1``), so sizes stay tiny; the same tests run on CUDA tensors when a GPU
is present (and the CPU ones then skip: Triton runs CPU tensors only when interpreting).

Inputs: a seed from the case's name; routing claims made true by construction and then
checked on the backend (kernel_cases.balance_routing, forcing_k).

Tolerances. Classes must equal the reference's except at float64-near-ties (tie_aware):
the kernels compute the same fp32 quantities, only summed in another order (first layer
split into an LR GEMM plus the rel/cell terms; tl.dot order), which moves a score by
~1e-7. sr: values are O(1) (bilinear in [0, 1] plus a
residual of O(1), up to 3.6 here), the worst difference measured here is 4.8e-7, so
rtol = atol = 1e-5 leaves 20x margin while a wrong weight, tap or pixel would be off by
O(0.1). probs lie in [0, 1]: worst measured 4.2e-7, atol 2e-6.
"""
from __future__ import annotations

import pytest
import torch

import pcsr_kernels
import tie_aware as ta
from conftest import random_problem
from kernel_cases import balance_routing, fixed_cost, forcing_k, margin_of, seed_of
from pcsr_kernels import backend, reference

SR_TOL = dict(rtol=1e-5, atol=1e-5)
PROBS_TOL = dict(rtol=1e-5, atol=2e-6)


def _device_params():
    out = []
    for dev in ("cpu", "cuda"):
        ok, why = backend.availability("triton", dev)
        out.append(pytest.param(dev, marks=pytest.mark.skipif(not ok, reason=f"triton on {dev}: {why}"),
                                id=dev))
    return out


DEVICES = _device_params()


def _out(h, w, s):
    return round(h * s), round(w * s)


def _both(fn_name, *args, **kwargs):
    with pcsr_kernels.use_backend("triton"):
        got = getattr(pcsr_kernels, fn_name)(*args, **kwargs)
    want = getattr(reference, f"{fn_name}_ref")(*args, **kwargs)
    return got, want


# ---- route_upsample, end to end --------------------------------------------------------

# (B, D, h, w, scale, hidden widths per branch (heaviest first), classifier hidden, k, adaptive, refine)
# k: a number, or "light" / "heavy": a k from the data that routes every pixel there
CASES = {
    "B1-M2-x2": (1, 8, 5, 7, 2, [[40, 40], [10]], [], 0.0, False, True),
    "B2-M3-x3": (2, 6, 3, 4, 3, [[20, 20], [16], [10]], [10, 10], 0.0, False, True),
    "B3-M4-x4": (3, 6, 3, 4, 4, [[20, 20, 20], [20, 20], [10], []], [10], 0.0, False, True),
    "B2-M2-x2.5": (2, 8, 5, 7, 2.5, [[24, 24], [10, 10]], [20, 20], 0.0, False, True),
    "B1-M3-x3.7": (1, 6, 5, 7, 3.7, [[40], [20], [10]], [10], 0.0, False, True),
    "no-refine": (2, 6, 4, 5, 3, [[20, 20], [10]], [], 0.0, False, False),
    "k-all-light": (2, 6, 5, 7, 2, [[20, 20], [10], [10]], [10], "light", False, True),
    "k-all-heavy": (1, 6, 3, 4, 3.7, [[20, 20], [10], [10]], [10], "heavy", False, True),
    "adaptive-M2": (2, 6, 5, 7, 3, [[20, 20], [10]], [10, 10], 0.0, True, True),
    "adaptive-M3": (1, 6, 5, 7, 2.5, [[20, 20], [16], [10]], [10], 7.0, True, True),
    "adaptive-M4": (2, 6, 3, 4, 4, [[20], [16], [10], [10]], [], 0.0, True, False),
    # the widths of the paper's variants (D, heavy 4 x hidden, light 3 x hidden, classifier)
    "FSRCNN-PCSR": (1, 48, 3, 4, 4, [[58] * 4, [10] * 3], [], 0.0, False, True),
    "CARN-PCSR": (1, 52, 3, 4, 4, [[74] * 4, [20] * 3], [10, 10], 0.0, False, True),
    "SRResNet-PCSR": (1, 58, 3, 4, 4, [[170] * 4, [40] * 3], [20, 20], 0.0, True, True),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_route_upsample(case, device):
    B, D, h, w, s, hidden, cls_hidden, k, adaptive, refine = CASES[case]
    H, W = _out(h, w, s)
    p = random_problem(B, D, h, w, H, W, hidden, cls_hidden, seed=seed_of(case), device=device)
    claim = k
    if isinstance(k, str):
        p["cost"] = fixed_cost(len(hidden), device)
        k = forcing_k(p, lightest=k == "light")
    else:
        balance_routing(p, k)
    (sr, cls), (sr_ref, cls_ref) = _both("route_upsample", **p, k=k, adaptive=adaptive, refine=refine)
    assert sr.shape == (B, 3, H, W) and sr.dtype == torch.float32 and cls.dtype == torch.int64
    M = len(hidden)
    same = ta.check_classes(cls.cpu(), cls_ref.cpu(), margin_of(p, k, adaptive), M)
    ta.assert_close_nan_aware(sr.cpu(), sr_ref.cpu(), same, **SR_TOL)
    if claim == "light":
        assert bool((cls == M - 1).all())  # forced by the data's k: the others are empty
    elif claim == "heavy":
        assert bool((cls == 0).all())
    else:  # balance_routing made several branches win on the reference; so on the backend
        assert cls_ref.unique().numel() > 1
        assert torch.equal(cls.unique(), cls_ref.unique())


# ---- the stage ops ----------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls_hidden,M,h,w,s", [([], 2, 5, 7, 2), ([10, 10], 3, 3, 4, 3.7), ([20], 4, 4, 5, 2.5)])
def test_classify(cls_hidden, M, h, w, s, device):
    H, W = _out(h, w, s)
    p = random_problem(2, 7, h, w, H, W, [[10]] * M, cls_hidden, seed=M, device=device)
    got, want = _both("classify", p["feat"], (H, W), p["classifier"])
    assert got.shape == (2, H, W, M)
    torch.testing.assert_close(got, want, **PROBS_TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [2, 3, 4])
@pytest.mark.parametrize("k,adaptive", [(0.0, False), (2.5, False), (50.0, False), (-50.0, False), (0.0, True)])
def test_route(M, k, adaptive, device):
    g = torch.Generator().manual_seed(100 * M + int(k))
    logits = torch.randn(2, 23, 31, M, generator=g) * 2
    probs = torch.softmax(logits, -1).to(device)
    cost = fixed_cost(M, device)
    got, want = _both("route", probs, cost, k, adaptive)
    ta.check_classes(got.cpu(), want.cpu(), ta.decision_margin(probs.cpu().double(), cost.cpu(), k, adaptive), M)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [2, 3, 4])
def test_route_adaptive_shapes(M, device):
    """ADM on skewed, clumped and constant heavy masses (a constant image is all light)."""
    g = torch.Generator().manual_seed(M)
    probs = torch.softmax(torch.randn(3, 37, 29, M, generator=g) * 3, -1)
    probs[1] = probs[1] ** 4  # skewed heavy mass
    probs[1] /= probs[1].sum(-1, keepdim=True)
    probs[2] = torch.softmax(torch.arange(M, dtype=torch.float32), 0)  # constant image
    probs = probs.to(device)
    got, want = _both("route", probs, fixed_cost(M, device), 0.0, True)
    ta.check_classes(got.cpu(), want.cpu(), ta.adm_margin(probs.cpu().double()), M)
    assert bool((got[2] == M - 1).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fill", ["random", "one-class", "empty-class"])
def test_upsample(fill, device):
    B, D, h, w, H, W = 2, 6, 5, 7, 17, 26
    hidden = [[40, 40], [20], [10, 10]]
    p = random_problem(B, D, h, w, H, W, hidden, [], seed=7, device=device)
    g = torch.Generator().manual_seed(8)
    classes = torch.randint(0, 3, (B, H, W), generator=g)
    if fill == "one-class":
        classes.fill_(1)
    elif fill == "empty-class":
        classes[classes == 1] = 2
    classes = classes.to(device)
    got, want = _both("upsample", p["feat"], p["lr"], classes, p["upsamplers"], p["depths"])
    torch.testing.assert_close(got, want, **SR_TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M,H,W", [(2, 9, 13), (3, 16, 5), (4, 2, 7), (2, 1, 1)])
def test_refine(M, H, W, device):
    g = torch.Generator().manual_seed(M * H * W)
    sr = torch.randn(2, 3, H, W, generator=g).to(device)
    classes = torch.randint(0, M, (2, H, W), generator=g).to(device)
    got, want = _both("refine", sr, classes, M)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # the same 9 adds, in the same order


# ---- pieces: packing, shape checks, precision, backend --------------------------

def test_hidden_tiling():
    from pcsr_kernels.triton.pack import hidden_tiling

    assert hidden_tiling(170) == (192, 64)
    assert hidden_tiling(74) == (80, 16)
    assert hidden_tiling(58) == (64, 64)
    assert hidden_tiling(40) == (48, 16)
    assert hidden_tiling(20) == (32, 32)
    assert hidden_tiling(10) == (16, 16)
    for wd in range(1, 400):
        hp, bn = hidden_tiling(wd)
        assert hp >= wd and bn in (16, 32, 64) and hp % bn == 0 and hp - wd < bn


def test_host_tile_checks():
    from pcsr_kernels.triton.mlp import check_tiles

    check_tiles(64, 192, 64, 16, 5)
    check_tiles(64, 2, 0, 2, 1)  # a single Linear needs no dot
    with pytest.raises(AssertionError, match=">= 16"):
        check_tiles(8, 16, 16, 16, 2)
    with pytest.raises(AssertionError, match="power"):
        check_tiles(64, 48, 48, 16, 2)
    with pytest.raises(AssertionError, match="multiple"):
        check_tiles(64, 80, 32, 16, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_weights_follow_inplace_updates(device):
    """The packed-weight cache must not serve stale weights after an in-place update."""
    H, W = 10, 14
    p = random_problem(1, 6, 5, 7, H, W, [[20, 20], [10]], [10], seed=11, device=device)
    args = dict(p, k=0.0, adaptive=False, refine=True)
    (sr1, _), _ = _both("route_upsample", **args)
    with torch.no_grad():
        p["upsamplers"][2].mul_(-0.5)  # a hidden layer of the heavy branch
        p["classifier"][0].add_(0.3)
    (sr2, cls2), (sr_ref, cls_ref) = _both("route_upsample", **args)
    assert not torch.allclose(sr1, sr2)
    assert torch.equal(cls2, cls_ref)
    torch.testing.assert_close(sr2, sr_ref, **SR_TOL)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the interpreter computes every dot in fp32")
def test_fast_precision_error_is_bounded():
    """Opt-in tensor-core dots against the fp32 reference, on a GPU (the interpreter runs
    every dot in fp32 whatever the setting, so there this would measure nothing). Where the
    classes agree (>= 99% of them must): "ieee" is fp32 to rounding; "tf32" keeps 10
    mantissa bits (~5e-4 relative per product; sums of ~200 products of O(1/sqrt(K))
    weights stay well under 1e-2) and must differ from fp32 at all (else the setting does
    not reach the dots); "tf32x3" recovers ~fp32 (1e-4 is generous) and must be closer
    than "tf32"."""
    from pcsr_kernels.triton_backend import get_precision, set_precision

    B, D, h, w = 1, 58, 4, 5
    H, W = 4 * h, 4 * w
    p = random_problem(B, D, h, w, H, W, [[170] * 4, [40] * 3], [20, 20], seed=5, device="cuda")
    sr_ref, cls_ref = reference.route_upsample_ref(**p, k=0.0, adaptive=False, refine=False)
    err = {}
    for precision, tol in [("ieee", 1e-5), ("tf32", 1e-2), ("tf32x3", 1e-4)]:
        set_precision(precision)
        try:
            assert get_precision() == precision
            with pcsr_kernels.use_backend("triton"):
                sr, cls = pcsr_kernels.route_upsample(**p, k=0.0, adaptive=False, refine=False)
        finally:
            set_precision(None)
        agree = cls == cls_ref
        assert agree.float().mean().item() >= 0.99, precision
        mask = agree[:, None].expand_as(sr)
        torch.testing.assert_close(sr[mask], sr_ref[mask], rtol=tol, atol=tol, msg=lambda m: f"{precision}: {m}")
        err[precision] = float((sr[mask] - sr_ref[mask]).abs().max())
    assert get_precision() == "ieee"
    assert err["tf32"] > 10 * err["ieee"], err  # TF32 rounding shows: the setting reaches the dots
    assert err["tf32x3"] < err["tf32"], err


def test_float64_is_refused():
    ok, _ = backend.availability("triton", "cpu")
    if not ok:
        pytest.skip("triton is not available for cpu tensors")
    p = random_problem(1, 6, 3, 4, 6, 8, [[10], [10]], [], dtype=torch.float64)
    with pcsr_kernels.use_backend("triton"), pytest.raises(TypeError, match="float64"):
        pcsr_kernels.route_upsample(**p)


def test_availability_reasons(monkeypatch):
    from pcsr_kernels import triton_backend

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = triton_backend.available("cpu")
    assert not ok and "TRITON_INTERPRET" in why
    ok, why = triton_backend.available("mps")
    assert not ok and why


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    p = random_problem(1, 6, 3, 4, 7, 9, [[20], [10]], [10], seed=13, device=device)
    args = (p["feat"], p["lr"], list(p["out_size"]), p["classifier"], p["upsamplers"], p["depths"], p["cost"],
            0.5, False, True)
    with pcsr_kernels.use_backend("triton"):
        torch.library.opcheck(torch.ops.pcsr.route_upsample.default, args)



@pytest.mark.slow
def test_kernels_compile_for_sm90():
    """The interpreter accepts what the GPU compiler rejects: build every kernel for sm_90
    (Triton ships ptxas; no GPU needed) at the launchers' parameters, the widest branch
    included, and require no compile error, no shared-memory overflow and no spill."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "pcsr_kernels.triton.compile_check", "--quick"], env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "No module named" in r.stderr and "nvidia" in r.stderr:
        pytest.skip("this Triton has no NVIDIA backend")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
