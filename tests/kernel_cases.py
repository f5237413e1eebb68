"""The case matrix of the compiled kernels (``cpu`` backend: ``test_cpu_kernels.py``;
``cuda`` backend: ``test_cuda_compile.py``), each case run through ``torch.ops.pcsr`` with
the backend chosen by ``pcsr_kernels.use_backend`` and compared with
``pcsr_kernels.reference.*_ref`` on fresh random inputs.

Tolerances. Classes must be equal exactly: the kernels compute the same quantities and
only sum them in another order (the first layer split into an LR precompute plus per-row
and per-column tables, register-blocked GEMMs instead of MKL's), which moves a score by
~1e-7 relative and can flip a decision only on a near-tie, which these random inputs do not
produce; the geometry (nearest LR pixel, ADM's K-means sums) is bit-identical. sr: values
are O(1) (bilinear in [0, 1] plus a residual of O(1)); the worst difference measured in
float32 is ~5e-7 (a few ulps per layer over at most 5 layers), so rtol = atol = 1e-5 leaves
a 20x margin while a wrong weight, tap or pixel is off by O(0.1). float64: the same
argument at 1e-16 rounding, 1e-10. probs lie in [0, 1]: worst measured ~3e-7, atol 2e-6.
"""
from __future__ import annotations

import zlib

import pytest
import torch

import pcsr_kernels
from conftest import random_problem
from pcsr_kernels import reference

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
PROBS_TOL = {torch.float32: dict(rtol=1e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def out_size(h, w, s):
    return round(h * s), round(w * s)


def fixed_cost(M, device, dtype=torch.float32):
    """Well separated costs (ratio 1.5 between neighbours), so that k = +-50 sends every
    pixel to one end whatever this random classifier says (|logit diff| << 20)."""
    c = torch.tensor([1.5 ** (M - 1 - j) for j in range(M)], dtype=torch.float64)
    return (c / c.sum()).to(dtype=dtype, device=device)


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) + 1  # +1: a seed for which every case routes as it claims


def both(backend_name, fn_name, *args, **kwargs):
    """(the op through `backend_name`, the reference) for the same arguments."""
    with pcsr_kernels.use_backend(backend_name):
        got = getattr(pcsr_kernels, fn_name)(*args, **kwargs)
    want = getattr(reference, f"{fn_name}_ref")(*args, **kwargs)
    return got, want


# (B, D, h, w, scale, hidden widths per branch (heaviest first), classifier hidden, k,
#  adaptive, refine, extra) -- extra: "dead" (branch 1 never chosen: classifier bias -200),
#  "f64", "channels_last"
CASES = {
    "B1-M2-x2": (1, 8, 5, 7, 2, [[40, 40], [10]], [], 0.0, False, True, ""),
    "B2-M3-x3": (2, 6, 3, 4, 3, [[20, 20], [16], [10]], [10, 10], 0.0, False, True, ""),
    "B3-M4-x4": (3, 6, 3, 4, 4, [[20, 20, 20], [20, 20], [10], []], [10], 0.0, False, True, ""),
    "B2-M2-x2.5": (2, 8, 5, 7, 2.5, [[24, 24], [10, 10]], [20, 20], 0.0, False, True, ""),
    "B1-M3-x3.7": (1, 6, 5, 7, 3.7, [[40], [20], [10]], [10], 0.0, False, True, ""),
    "odd-B2-M2-x3": (2, 5, 7, 9, 3, [[13, 13], [7]], [3], 0.3, False, True, ""),
    "odd-B1-M4-x2.5": (1, 9, 9, 5, 2.5, [[33], [17], [9], [5]], [11], -0.7, False, True, ""),
    "multi-tile-x4": (2, 12, 13, 70, 4, [[58] * 4, [10] * 3], [], 0.0, False, True, ""),
    "multi-tile-x3.7": (1, 12, 21, 50, 3.7, [[30, 30], [10]], [10], 0.0, True, True, ""),
    "no-refine": (2, 6, 4, 5, 3, [[20, 20], [10]], [], 0.0, False, False, ""),
    "k+50-all-light": (2, 6, 5, 7, 2, [[20, 20], [10], [10]], [10], 50.0, False, True, ""),
    "k-50-all-heavy": (1, 6, 3, 4, 3.7, [[20, 20], [10], [10]], [10], -50.0, False, True, ""),
    "empty-class": (2, 6, 5, 7, 3, [[20, 20], [16], [10]], [10], 0.0, False, True, "dead"),
    "adaptive-M2": (2, 6, 5, 7, 3, [[20, 20], [10]], [10, 10], 0.0, True, True, ""),
    "adaptive-M3": (1, 6, 5, 7, 2.5, [[20, 20], [16], [10]], [10], 7.0, True, True, ""),
    "adaptive-M4": (3, 6, 3, 4, 4, [[20], [16], [10], [10]], [], 0.0, True, False, ""),
    "f64-M3": (2, 6, 5, 7, 3.7, [[20, 20], [16], [10]], [10], 0.0, False, True, "f64"),
    "f64-adaptive": (1, 6, 5, 7, 2, [[20, 20], [10]], [10], 0.0, True, True, "f64"),
    "channels-last": (2, 8, 5, 7, 3, [[24, 24], [10]], [10], 0.0, False, True, "channels_last"),
    # the widths of the paper's variants (D, heavy 4 x hidden, light 3 x hidden, classifier)
    "FSRCNN-PCSR": (1, 48, 6, 8, 4, [[58] * 4, [10] * 3], [], 0.0, False, True, ""),
    "CARN-PCSR": (1, 52, 6, 8, 4, [[74] * 4, [20] * 3], [10, 10], 0.0, False, True, ""),
    "SRResNet-PCSR": (1, 58, 4, 5, 4, [[170] * 4, [40] * 3], [20, 20], 0.0, True, True, ""),
}


def make_case(case, device):
    B, D, h, w, s, hidden, cls_hidden, k, adaptive, refine, extra = CASES[case]
    H, W = out_size(h, w, s)
    dtype = torch.float64 if extra == "f64" else torch.float32
    p = random_problem(B, D, h, w, H, W, hidden, cls_hidden, seed=seed_of(case), dtype=dtype, device=device)
    if abs(k) == 50:
        p["cost"] = fixed_cost(len(hidden), device, dtype)
    if extra == "dead":
        with torch.no_grad():
            p["classifier"][-1][1] -= 200.0  # branch 1's logit: its probability underflows to 0
    if extra == "channels_last":
        p["feat"] = p["feat"].contiguous(memory_format=torch.channels_last)
    return p, dict(k=k, adaptive=adaptive, refine=refine)


def check_route_upsample(backend_name, device, case):
    p, kw = make_case(case, device)
    (sr, cls), (sr_ref, cls_ref) = both(backend_name, "route_upsample", **p, **kw)
    B, _, h, w = p["feat"].shape
    H, W = p["out_size"]
    M = len(p["depths"])
    assert sr.shape == (B, 3, H, W) and sr.dtype == p["feat"].dtype and sr.device == p["feat"].device
    assert cls.shape == (B, H, W) and cls.dtype == torch.int64
    assert torch.equal(cls, cls_ref), f"{(cls != cls_ref).sum().item()} of {cls.numel()} classes differ"
    torch.testing.assert_close(sr, sr_ref, **TOL[sr.dtype])
    if kw["k"] == 50:
        assert bool((cls == M - 1).all())  # one class only; the others are empty
    elif kw["k"] == -50:
        assert bool((cls == 0).all())
    else:
        assert cls.unique().numel() > 1  # the case routes to several branches, as it claims
    if CASES[case][-1] == "dead":
        assert not bool((cls == 1).any())


CLASSIFY_CASES = [([], 2, 5, 7, 2), ([10, 10], 3, 3, 4, 3.7), ([20], 4, 4, 5, 2.5), ([7, 9, 11], 3, 9, 13, 3)]


def check_classify(backend_name, device, cls_hidden, M, h, w, s, dtype=torch.float32):
    H, W = out_size(h, w, s)
    p = random_problem(2, 7, h, w, H, W, [[10]] * M, cls_hidden, seed=M + h, dtype=dtype, device=device)
    got, want = both(backend_name, "classify", p["feat"], (H, W), p["classifier"])
    assert got.shape == (2, H, W, M) and got.dtype == dtype
    torch.testing.assert_close(got, want, **PROBS_TOL[dtype])


def check_route(backend_name, device, M, k, adaptive, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 * M + int(k))
    probs = torch.softmax(torch.randn(2, 23, 31, M, generator=g, dtype=torch.float64) * 2, -1)
    probs = probs.to(dtype=dtype, device=device)
    got, want = both(backend_name, "route", probs, fixed_cost(M, device), k, adaptive)
    assert torch.equal(got, want), f"{(got != want).sum().item()} classes differ"


def check_route_adaptive_shapes(backend_name, device, M):
    """ADM on skewed and constant heavy masses (a constant image is all light)."""
    g = torch.Generator().manual_seed(M)
    probs = torch.softmax(torch.randn(3, 37, 29, M, generator=g) * 3, -1)
    probs[1] = probs[1] ** 4
    probs[1] /= probs[1].sum(-1, keepdim=True)
    probs[2] = torch.softmax(torch.arange(M, dtype=torch.float32), 0)
    probs = probs.to(device)
    got, want = both(backend_name, "route", probs, fixed_cost(M, device), 0.0, True)
    assert torch.equal(got, want)
    assert bool((got[2] == M - 1).all())


def check_upsample(backend_name, device, fill, dtype=torch.float32):
    B, D, h, w, H, W = 2, 6, 5, 7, 17, 26
    p = random_problem(B, D, h, w, H, W, [[40, 40], [20], [10, 10]], [], seed=7, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(8)
    classes = torch.randint(0, 3, (B, H, W), generator=g)
    if fill == "one-class":
        classes.fill_(1)
    elif fill == "empty-class":
        classes[classes == 1] = 2
    classes = classes.to(device)
    got, want = both(backend_name, "upsample", p["feat"], p["lr"], classes, p["upsamplers"], p["depths"])
    torch.testing.assert_close(got, want, **TOL[dtype])


REFINE_CASES = [(2, 9, 13), (3, 16, 5), (4, 2, 7), (2, 1, 1), (3, 70, 41)]


def check_refine(backend_name, device, M, H, W, dtype=torch.float32):
    g = torch.Generator().manual_seed(M * H * W)
    sr = torch.randn(2, 3, H, W, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    classes = torch.randint(0, M, (2, H, W), generator=g).to(device)
    got, want = both(backend_name, "refine", sr, classes, M)
    # The same 9 adds in the same order and one division: equal up to the last bit.
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def skip_unless(backend_name, device):
    from pcsr_kernels import backend

    ok, why = backend.availability(backend_name, device)
    if not ok:
        pytest.skip(f"{backend_name} backend on {device}: {why}")
