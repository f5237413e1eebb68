"""The case matrix of the compiled kernels (``cpu`` backend: ``test_cpu_kernels.py``;
``cuda`` backend: ``test_cuda_compile.py``), each case run through ``torch.ops.pcsr`` with
the backend chosen by ``pcsr_kernels.use_backend`` and compared with
``pcsr_kernels.reference.*_ref`` on fresh random inputs.

Inputs come from a seed derived from the case's name, never chosen for how they route.
What a case claims about its routing is made true by construction from the data, then
checked on the backend: the classifier's last bias is shifted so that every branch's
score has median 0 over the pixels (so several branches win somewhere), and the "all
light" / "all heavy" cases take a k computed from the data that outweighs the spread of
the log-probabilities (:func:`forcing_k`), so the kernel must route every pixel to one end.

Tolerances. Classes must equal the reference's except at float64-near-ties
(:mod:`tie_aware`): the kernels compute the same quantities and only sum them in another
order (the first layer split into an LR precompute plus per-row and per-column tables,
register-blocked GEMMs instead of MKL's), which moves a score by ~1e-7 relative; the
geometry (nearest LR pixel, ADM's K-means sums) is bit-identical. sr: values are O(1)
(bilinear in [0, 1] plus a residual of O(1)); the worst difference measured in float32 is
~5e-7 (a few ulps per layer over at most 5 layers), so rtol = atol = 1e-5 leaves a 20x
margin while a wrong weight, tap or pixel is off by O(0.1). float64: the same argument at
1e-16 rounding, 1e-10. probs lie in [0, 1]: worst measured ~3e-7, atol 2e-6.
"""
from __future__ import annotations

import zlib

import pytest
import torch

import pcsr_kernels
import tie_aware as ta
from conftest import random_problem
from pcsr_kernels import reference

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
PROBS_TOL = {torch.float32: dict(rtol=1e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def out_size(h, w, s):
    return round(h * s), round(w * s)


def fixed_cost(M, device, dtype=torch.float32):
    """Well separated costs (ratio 1.5 between neighbours), heaviest first."""
    c = torch.tensor([1.5 ** (M - 1 - j) for j in range(M)], dtype=torch.float64)
    return (c / c.sum()).to(dtype=dtype, device=device)


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def _log_probs64(p: dict) -> torch.Tensor:
    q = ta.to64({k: (v.cpu() if isinstance(v, torch.Tensor) else [t.cpu() for t in v] if isinstance(v, list) and v
                     and isinstance(v[0], torch.Tensor) else v) for k, v in p.items()})
    return torch.log(reference.classify_ref(q["feat"], q["out_size"], q["classifier"]))


def balance_routing(p: dict, k: float) -> None:
    """Shift the classifier's last bias (in place) so that each branch's routing score
    ``log p_j - k log cost_j`` has median ``0.3 j / M`` over the pixels: every branch then
    wins at some pixels, whatever the seed. (Not 0 for all: pixels whose logits equal the
    bias -- every ReLU of the classifier off -- would all sit at an exact tie.)"""
    score = _log_probs64(p) - k * torch.log(p["cost"].double().cpu())
    M = score.shape[-1]
    med = score.reshape(-1, M).median(0).values - 0.3 * torch.arange(M, dtype=torch.float64) / M
    with torch.no_grad():
        p["classifier"][-1] -= med.to(p["classifier"][-1])


def forcing_k(p: dict, lightest: bool) -> float:
    """A k that routes every pixel to the lightest branch (k > 0) or the heaviest (k < 0)
    on these inputs: ``score_j - score_i = (log p_j - log p_i) + k (log c_i - log c_j)``,
    so k times the smallest gap between the (descending) log-costs must beat the widest
    spread of a pixel's log-probabilities, here by 1."""
    logp = _log_probs64(p)
    spread = float((logp.max(-1).values - logp.min(-1).values).max())
    gaps = -torch.diff(torch.log(p["cost"].double().cpu()))
    assert bool((gaps > 0).all()), "forcing_k needs costs in decreasing order"
    k = (spread + 1.0) / float(gaps.min())
    return k if lightest else -k


def both(backend_name, fn_name, *args, **kwargs):
    """(the op through `backend_name`, the reference) for the same arguments."""
    with pcsr_kernels.use_backend(backend_name):
        got = getattr(pcsr_kernels, fn_name)(*args, **kwargs)
    want = getattr(reference, f"{fn_name}_ref")(*args, **kwargs)
    return got, want


# (B, D, h, w, scale, hidden widths per branch (heaviest first), classifier hidden, k,
#  adaptive, refine, extra) -- k: a number, or "light" / "heavy" (forcing_k); extra:
#  "dead" (branch 1 never chosen: its logit lowered by 200), "f64", "channels_last"
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
    "k-all-light": (2, 6, 5, 7, 2, [[20, 20], [10], [10]], [10], "light", False, True, ""),
    "k-all-heavy": (1, 6, 3, 4, 3.7, [[20, 20], [10], [10]], [10], "heavy", False, True, ""),
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
    if isinstance(k, str):
        p["cost"] = fixed_cost(len(hidden), device, dtype)
        k = forcing_k(p, lightest=k == "light")
    else:
        balance_routing(p, k)
    if extra == "dead":
        with torch.no_grad():
            p["classifier"][-1][1] -= 200.0  # branch 1's logit: its probability underflows to 0
    if extra == "channels_last":
        p["feat"] = p["feat"].contiguous(memory_format=torch.channels_last)
    return p, dict(k=k, adaptive=adaptive, refine=refine)


def margin_of(p: dict, k: float, adaptive: bool) -> torch.Tensor:
    """The float64 reference's decision margin of every pixel (tie_aware)."""
    return ta.decision_margin(_log_probs64(p).exp(), p["cost"].cpu(), k, adaptive)


def check_route_upsample(backend_name, device, case):
    p, kw = make_case(case, device)
    (sr, cls), (sr_ref, cls_ref) = both(backend_name, "route_upsample", **p, **kw)
    B, _, h, w = p["feat"].shape
    H, W = p["out_size"]
    M = len(p["depths"])
    assert sr.shape == (B, 3, H, W) and sr.dtype == p["feat"].dtype and sr.device == p["feat"].device
    assert cls.shape == (B, H, W) and cls.dtype == torch.int64
    same = ta.check_classes(cls.cpu(), cls_ref.cpu(), margin_of(p, kw["k"], kw["adaptive"]), M)
    ta.assert_close_nan_aware(sr.cpu(), sr_ref.cpu(), same, **TOL[sr.dtype])
    k = CASES[case][7]
    if k == "light":
        assert bool((cls == M - 1).all())  # forced by forcing_k: the others are empty
    elif k == "heavy":
        assert bool((cls == 0).all())
    else:  # balance_routing made several branches win on the reference; so on the backend
        assert cls_ref.unique().numel() > 1
        assert torch.equal(cls.unique(), cls_ref.unique())
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
    cost = fixed_cost(M, device)
    got, want = both(backend_name, "route", probs, cost, k, adaptive)
    ta.check_classes(got.cpu(), want.cpu(), ta.decision_margin(probs.cpu().double(), cost.cpu(), k, adaptive), M)


def check_route_adaptive_shapes(backend_name, device, M):
    """ADM on skewed and constant heavy masses (a constant image is all light)."""
    g = torch.Generator().manual_seed(M)
    probs = torch.softmax(torch.randn(3, 37, 29, M, generator=g) * 3, -1)
    probs[1] = probs[1] ** 4
    probs[1] /= probs[1].sum(-1, keepdim=True)
    probs[2] = torch.softmax(torch.arange(M, dtype=torch.float32), 0)
    probs = probs.to(device)
    got, want = both(backend_name, "route", probs, fixed_cost(M, device), 0.0, True)
    ta.check_classes(got.cpu(), want.cpu(), ta.adm_margin(probs.cpu().double()), M)
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
