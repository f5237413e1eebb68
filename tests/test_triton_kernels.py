"""The Triton route_upsample kernels (dense pass, branch kernels, refine on uint8 classes)
against a float64 reference, on fresh random inputs, with every output buffer poisoned
(see ``triton_checks.py`` for the rules: tie-aware classes, error on the MLP residual).

Under ``TRITON_INTERPRET=1`` on CPU tensors (tiny sizes), on CUDA tensors when a GPU is
present. Also: the int64 index path, the stage ops on the same kernels, the packed-weight
cache, and that the launcher never reads a value back to the host.
"""
from __future__ import annotations

import sys

import zlib

import pytest
import torch

import pcsr_kernels
from conftest import random_problem
from pcsr_kernels import backend, reference
from triton_checks import (triton_devices, bound, check_classes, decision_margin, poisoned_outputs, residual_error, to64,
                           triton_route_upsample)


DEVICES = triton_devices()


def _fixed_cost(M, device):
    c = torch.tensor([1.5 ** (M - 1 - j) for j in range(M)], dtype=torch.float64)
    return (c / c.sum()).to(torch.float32).to(device)


# (B, D, h, w, H, W, hidden per branch (heaviest first), classifier hidden, k, adaptive, refine)
CASES = {
    "M2-odd-x3.4": (2, 7, 5, 7, 17, 24, [[33, 33], [10]], [], 0.0, False, True),
    "M3-x2.6-norefine": (1, 9, 6, 5, 16, 13, [[40, 40, 40], [20, 20], [10]], [10], 0.3, False, False),
    "M5-x3": (2, 6, 4, 5, 12, 15, [[48, 48], [40], [24, 24], [17], [9]], [12, 12], 0.0, False, True),
    "M2-all-light": (1, 6, 5, 6, 13, 17, [[20, 20], [10]], [10], 50.0, False, True),
    "M3-all-heavy": (2, 5, 3, 4, 11, 9, [[16, 16], [12], [10]], [], -50.0, False, True),
    "M3-adaptive": (2, 6, 5, 7, 14, 19, [[24, 24], [16], [10]], [10], 0.0, True, True),
    "M5-adaptive": (1, 6, 5, 6, 15, 16, [[20], [18], [16], [12], [8]], [], 0.0, True, False),
    "M2-one-layer-light": (1, 8, 4, 6, 15, 21, [[30, 30], []], [14], 0.0, False, True),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_route_upsample_against_float64(case, device):
    B, D, h, w, H, W, hidden, cls_hidden, k, adaptive, refine = CASES[case]
    M = len(hidden)
    p = random_problem(B, D, h, w, H, W, hidden, cls_hidden, seed=zlib.crc32(case.encode()) % 10000,
                       device=device)  # str hash() changes per process (PYTHONHASHSEED)
    if abs(k) == 50:
        p["cost"] = _fixed_cost(M, device)
    kw = dict(k=k, adaptive=adaptive, refine=refine)
    sr, cls = triton_route_upsample(p, **kw, precision="ieee")
    assert sr.shape == (B, 3, H, W) and sr.dtype == torch.float32
    assert bool(torch.isfinite(sr).all()), "a pixel was never written"
    p64 = to64(p)
    sr64, cls64 = reference.route_upsample_ref(**p64, **kw)
    if adaptive:  # ADM clusters the fp32 heavy mass: compare with the fp32 reference's decision
        _, cls32 = reference.route_upsample_ref(**p, **kw)
        same = check_classes(cls, cls32, None, M)
        same = same & (cls32 == cls64)
    else:
        same = check_classes(cls, cls64, decision_margin(p64, k), M)
    assert residual_error(sr, sr64, p64["lr"], same, refine) <= bound("ieee", device)
    if k == 50:
        assert bool((cls == M - 1).all())
    elif k == -50:
        assert bool((cls == 0).all())
    else:
        assert cls.unique().numel() > 1, "the case routes to several branches, as it claims"


@pytest.mark.parametrize("device", DEVICES)
def test_int64_index_path(device, monkeypatch):
    """The int64 index math (taken when an offset reaches 2^31) on a small problem: forced."""
    from pcsr_kernels.triton import route_upsample as ru

    monkeypatch.setattr(ru, "needs_int64", lambda *extents: True)
    p = random_problem(2, 6, 5, 7, 13, 18, [[24, 24], [16], [10]], [10], seed=21, device=device)
    sr, cls = triton_route_upsample(p, k=0.2, refine=True)
    sr_ref, cls_ref = reference.route_upsample_ref(**p, k=0.2, refine=True)
    assert torch.equal(cls, cls_ref)
    torch.testing.assert_close(sr, sr_ref, rtol=1e-5, atol=1e-5)


def test_int64_decision():
    from pcsr_kernels.triton.route_upsample import index_extents
    from pcsr_kernels.triton.tc_mlp import needs_int64

    assert not needs_int64(*index_extents(1, 1080, 1920, 4320, 7680, 288))   # 8K, one image
    assert not needs_int64(*index_extents(2, 1080, 1920, 4320, 7680, 288))   # two
    assert needs_int64(*index_extents(4, 1080, 1920, 4320, 7680, 288))       # P: B*h*w*S >= 2^31
    assert needs_int64(*index_extents(22, 1080, 1920, 4320, 7680, 2))        # output: 3*B*H*W >= 2^31
    assert not needs_int64(*index_extents(16, 540, 960, 2160, 3840, 200))


def _coords_kernel():
    import triton
    import triton.language as tl

    from pcsr_kernels.triton.tc_mlp import _coords

    @triton.jit
    def k(pix_ptr, iy_ptr, ix_ptr, ry_ptr, rx_ptr, out_ptr, HW, W, hw, w, n):
        i = tl.arange(0, 16)
        m = i < n
        pix = tl.load(pix_ptr + i, mask=m, other=0)
        b, r, y, x, lrow, ry, rx = _coords(pix, HW, W, hw, w, iy_ptr, ix_ptr, ry_ptr, rx_ptr, True)
        tl.store(out_ptr + i * 4, b, mask=m)
        tl.store(out_ptr + i * 4 + 1, y, mask=m)
        tl.store(out_ptr + i * 4 + 2, x, mask=m)
        tl.store(out_ptr + i * 4 + 3, lrow, mask=m)

    k.fn.__globals__["_coords"] = _coords
    k.fn.__globals__["tl"] = tl
    return k


@pytest.mark.parametrize("device", DEVICES)
def test_coords_int64_at_large_indices(device):
    """The pixel -> (image, row, column, LR row) math of every kernel, in int64, at indices
    past 2^31 and 2^32 that no test image reaches: against Python integers."""
    H, W, h, w = 4320, 7680, 1080, 1920
    from pcsr_kernels.geometry import nearest_axis

    iy, ry = nearest_axis(H, h)
    ix, rx = nearest_axis(W, w)
    pix = torch.tensor([0, 2**31 - 1, 2**31, 2**31 + 12345, 2**32 + 7, 3 * H * W - 1, 5 * H * W + 77], dtype=torch.int64)
    out = torch.empty(pix.numel(), 4, dtype=torch.int64)
    dev = torch.device(device)
    args = [t.to(dev) for t in (pix, iy, ix, ry, rx, out)]
    _coords_kernel()[(1,)](*args, H * W, W, h * w, w, pix.numel())
    got = args[-1].cpu()
    for i, q in enumerate(pix.tolist()):
        b, rr = divmod(q, H * W)
        y, x = divmod(rr, W)
        assert got[i].tolist() == [b, y, x, b * h * w + int(iy[y]) * w + int(ix[x])], q


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fill", ["random", "one-class", "empty-class"])
def test_upsample_op(fill, device):
    """The upsample op runs the same kernels on given (int64) classes: M = 4, poisoned."""
    B, D, h, w, H, W = 2, 6, 5, 7, 17, 23
    hidden = [[40, 40], [20], [12, 12], [10]]
    p = random_problem(B, D, h, w, H, W, hidden, [], seed=7, device=device)
    g = torch.Generator().manual_seed(8)
    classes = torch.randint(0, 4, (B, H, W), generator=g)
    if fill == "one-class":
        classes.fill_(1)
    elif fill == "empty-class":
        classes[classes == 2] = 0
    classes = classes.to(device)
    with pcsr_kernels.use_backend("triton"), poisoned_outputs():
        got = pcsr_kernels.upsample(p["feat"], p["lr"], classes, p["upsamplers"], p["depths"])
    want = reference.upsample_ref(p["feat"], p["lr"], classes, p["upsamplers"], p["depths"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M,H,W", [(2, 9, 70), (5, 17, 3), (3, 1, 1), (4, 23, 66)])
def test_refine_uint8_and_int64(M, H, W, device):
    from pcsr_kernels.triton.refine import launch_refine

    g = torch.Generator().manual_seed(M * H * W)
    sr = torch.randn(2, 3, H, W, generator=g).to(device)
    classes = torch.randint(0, M, (2, H, W), generator=g).to(device)
    want = reference.refine_ref(sr, classes, M)
    for cls in (classes, classes.to(torch.uint8)):
        out = torch.full_like(sr, float("nan"))
        launch_refine(sr, cls, M, out=out)
        torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)


def test_bad_classes_are_refused():
    ok, _ = backend.availability("triton", "cpu")
    if not ok:
        pytest.skip("triton is not available for cpu tensors")
    p = random_problem(1, 6, 3, 4, 6, 8, [[10], [10]], [])
    classes = torch.zeros(1, 6, 8, dtype=torch.int64)
    classes[0, 2, 3] = 2
    with pcsr_kernels.use_backend("triton"):
        with pytest.raises(ValueError, match=r"classes must lie in \[0, M\) = \[0, 2\)"):
            pcsr_kernels.upsample(p["feat"], p["lr"], classes, p["upsamplers"], p["depths"])
        with pytest.raises(ValueError, match=r"classes must lie in \[0, M\) = \[0, 2\)"):
            pcsr_kernels.refine(torch.zeros(1, 3, 6, 8), classes, 2)
        with pytest.raises(ValueError, match="precision must be one of"):
            pcsr_kernels.upsample(p["feat"], p["lr"], classes.clamp(max=1), p["upsamplers"], p["depths"],
                                  precision="fp8")


@pytest.mark.parametrize("device", DEVICES)
def test_packed_weights_follow_inplace_updates(device):
    """The chunked packing (fp32 and bf16) is cached on each tensor's version: an in-place
    update must be seen by the next call."""
    from pcsr_kernels.triton import pack

    p = random_problem(1, 6, 5, 7, 10, 14, [[20, 20], [10]], [10], seed=11, device=device)
    br = p["upsamplers"][:6]
    for mode in ("fp32", "bf16emu"):
        a = pack.packed_tc(br, 6, mode)
        assert pack.packed_tc(br, 6, mode) is a  # cached
        with torch.no_grad():
            br[2].mul_(-0.5)
        b = pack.packed_tc(br, 6, mode)
        assert b is not a and not torch.equal(a.wmid, b.wmid)
    (sr, cls) = triton_route_upsample(p, k=0.0)
    sr_ref, cls_ref = reference.route_upsample_ref(**p, k=0.0)
    assert torch.equal(cls, cls_ref)
    torch.testing.assert_close(sr, sr_ref, rtol=1e-5, atol=1e-5)


# ---- no host reads in the launcher ------------------------------------------------------

_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


def _from_pcsr(frame) -> bool:
    """Whether the innermost of pcsr_kernels / triton frames above ``frame`` is
    pcsr_kernels' (Triton's interpreter may read its CPU tensors; the package may not)."""
    while frame is not None:
        mod = frame.f_globals.get("__name__", "")
        if mod.startswith("triton"):
            return False
        if mod.startswith("pcsr_kernels"):
            return True
        frame = frame.f_back
    return False


class HostRead(AssertionError):
    pass


def forbid_host_reads(monkeypatch):
    """Make every Tensor method that reads a value to the host raise when called (directly
    or through torch code) from pcsr_kernels code; ``.to`` too when it names the CPU."""
    calls = []

    def wrap(name, orig):
        def f(self, *a, **k):
            if _from_pcsr(sys._getframe(1)):
                calls.append(name)
                raise HostRead(f"Tensor.{name} called from pcsr_kernels")
            return orig(self, *a, **k)
        return f

    for name in _READS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    orig_to = torch.Tensor.to

    def to(self, *a, **k):
        dev = k.get("device", a[0] if a else None)
        if (isinstance(dev, torch.device) and dev.type == "cpu" or dev == "cpu") and _from_pcsr(sys._getframe(1)):
            calls.append("to(cpu)")
            raise HostRead("Tensor.to('cpu') called from pcsr_kernels")
        return orig_to(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to", to)
    return calls


def _launcher_args(adaptive):
    p = random_problem(2, 6, 5, 7, 13, 17, [[20, 20], [16], [10]], [10], seed=5)
    return (p["feat"], p["lr"], list(p["out_size"]), p["classifier"], p["upsamplers"], p["depths"], p["cost"],
            0.3, adaptive, True, "ieee")


@pytest.mark.parametrize("adaptive", [False, True])
def test_launcher_reads_nothing_back(adaptive, monkeypatch):
    ok, _ = backend.availability("triton", "cpu")
    if not ok:
        pytest.skip("triton is not available for cpu tensors")
    from pcsr_kernels.triton.route_upsample import route_upsample_triton

    args = _launcher_args(adaptive)
    want = route_upsample_triton(*args)  # also compiles/caches everything first
    forbid_host_reads(monkeypatch)
    got = route_upsample_triton(*args)
    monkeypatch.undo()
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])


@pytest.mark.parametrize("planted", ["x.sum().item()", "x.cpu()", "x.tolist()", "bool(x.any())",
                                     "int(x.sum())", "x.to('cpu')", "(1 if x.any() else 0)"])
def test_host_read_detector_catches_a_planted_read(planted, monkeypatch):
    """The check above fails when the launcher reads a value back: a read planted in a
    function the launcher calls (compiled as pcsr_kernels code)."""
    ok, _ = backend.availability("triton", "cpu")
    if not ok:
        pytest.skip("triton is not available for cpu tensors")
    from pcsr_kernels.triton import route_upsample as ru

    ns = {"__name__": ru.__name__, "orig": ru.klog_cost}
    exec(f"def klog_cost(cost, k):\n    x = orig(cost, k)\n    {planted}\n    return x\n", ns)
    monkeypatch.setattr(ru, "klog_cost", ns["klog_cost"])
    calls = forbid_host_reads(monkeypatch)
    with pytest.raises(HostRead):
        ru.route_upsample_triton(*_launcher_args(False))
    assert calls


# ---- CUDA graphs (GPU) ---------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_graph_capture_and_replay():
    """route_upsample captured in a CUDA graph (no host sync, device-side list lengths),
    replayed on new inputs copied into the captured buffers: equal to eager calls."""
    if not torch.cuda.is_available() or not backend.availability("triton", "cuda")[0]:
        pytest.skip("needs a GPU and the triton backend")
    dev = "cuda"
    p = random_problem(2, 12, 24, 31, 96, 124, [[58] * 4, [10] * 3], [10], seed=1, device=dev)
    static = {k: v for k, v in p.items()}
    kw = dict(k=0.0, adaptive=False, refine=True)
    with pcsr_kernels.use_backend("triton"):
        for _ in range(2):  # compile, fill the caches
            pcsr_kernels.route_upsample(**static, **kw)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            sr_g, cls_g = pcsr_kernels.route_upsample(**static, **kw)
        for seed in (2, 3):
            q = random_problem(2, 12, 24, 31, 96, 124, [[58] * 4, [10] * 3], [10], seed=seed, device=dev)
            static["feat"].copy_(q["feat"])
            static["lr"].copy_(q["lr"])
            g.replay()
            sr_e, cls_e = pcsr_kernels.route_upsample(**static, **kw)
            torch.cuda.synchronize()
            assert torch.equal(cls_g, cls_e)
            torch.testing.assert_close(sr_g, sr_e, rtol=0, atol=0)
            sr_r, cls_r = reference.route_upsample_ref(**static, **kw)
            assert float((cls_g != cls_r).double().mean()) < 1e-3
