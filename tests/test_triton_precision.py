"""The upsamplers' precision: the setting (argument, set_precision, PCSR_PRECISION), each
mode of the Triton kernels against a float64 reference (error on the MLP residual, bounds
of PLAN.md section 4, see ``triton_checks.py``), and the PSNR budget with the authors'
checkpoints.

Under the interpreter every dot is fp32, so "tf32"/"tf32x3" are held to the ieee bound
there (that checks their code path, not their rounding); "bf16" runs through its emulation
(bf16-rounded P, weights and activations, fp32 sums), which is the arithmetic of the GPU's
bf16 path up to the order of the sums. Each tensor-core mode's own bound is checked on a
GPU (``test_tensor_core_error_bounds``).
"""
from __future__ import annotations

import pytest
import torch

import pcsr_kernels
from conftest import official_file, random_problem
from pcsr_kernels import backend, precision, reference
from triton_checks import (triton_devices, REL_BOUND, bound, check_classes, decision_margin, residual_error, to64,
                           triton_route_upsample)


DEVICES = triton_devices()
PRECISIONS = list(pcsr_kernels.PRECISIONS)


# ---- the setting -------------------------------------------------------------------------

def test_setting_resolution(monkeypatch):
    monkeypatch.delenv("PCSR_PRECISION", raising=False)
    monkeypatch.delenv("PCSR_TRITON_PRECISION", raising=False)
    assert pcsr_kernels.get_precision() == "ieee"
    monkeypatch.setenv("PCSR_PRECISION", "BF16")
    assert pcsr_kernels.get_precision() == "bf16"
    with pcsr_kernels.use_precision("tf32"):
        assert pcsr_kernels.get_precision() == "tf32"
        assert precision.resolve(None) == "tf32" and precision.resolve("tf32x3") == "tf32x3"
    assert pcsr_kernels.get_precision() == "bf16"
    monkeypatch.delenv("PCSR_PRECISION")
    monkeypatch.setenv("PCSR_TRITON_PRECISION", "tf32x3")  # the old name still works
    assert pcsr_kernels.get_precision() == "tf32x3"
    monkeypatch.setenv("PCSR_PRECISION", "ieee")
    with pytest.raises(ValueError, match="PCSR_TRITON_PRECISION.*disagree|disagree"):
        pcsr_kernels.get_precision()
    monkeypatch.setenv("PCSR_PRECISION", "fp16")
    monkeypatch.delenv("PCSR_TRITON_PRECISION")
    with pytest.raises(ValueError, match="PCSR_PRECISION must be one of ieee, tf32x3, tf32, bf16, got 'fp16'"):
        pcsr_kernels.get_precision()
    with pytest.raises(ValueError, match="precision must be one of"):
        pcsr_kernels.set_precision("half")


def test_every_backend_checks_the_argument_and_computes_exactly():
    p = random_problem(1, 6, 3, 4, 7, 9, [[12], [6]], [5], seed=3)
    want = reference.route_upsample_ref(**p)
    names = ["reference"] + [n for n in ("cpu", "triton") if backend.availability(n, "cpu")[0]]
    for name in names:
        with pcsr_kernels.use_backend(name):
            with pytest.raises(ValueError, match="precision must be one of ieee, tf32x3, tf32, bf16, got 'fp8'"):
                pcsr_kernels.route_upsample(**p, precision="fp8")
            if name != "triton":  # the exact backends ignore the knob
                sr, cls = pcsr_kernels.route_upsample(**p, precision="bf16")
                assert torch.equal(cls, want[1])
                torch.testing.assert_close(sr, want[0], rtol=1e-5, atol=1e-5)
    if pcsr_kernels.extension_loaded():  # the compiled ops check it themselves too
        with pytest.raises(ValueError, match="precision must be one of"):
            torch.ops.pcsr.upsample.default.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), p["feat"],
                                                       p["lr"], want[1], p["upsamplers"], p["depths"], "tf16")


def test_op_default_follows_the_setting(monkeypatch):
    """precision=None (the schema default) is the configured mode: under set_precision the
    triton backend computes what an explicit argument computes."""
    ok, _ = backend.availability("triton", "cpu")
    if not ok:
        pytest.skip("triton is not available for cpu tensors")
    p = random_problem(1, 6, 4, 5, 11, 13, [[20, 20], [10]], [], seed=4)
    with pcsr_kernels.use_backend("triton"):
        with pcsr_kernels.use_precision("bf16"):
            a = torch.ops.pcsr.route_upsample(p["feat"], p["lr"], [11, 13], p["classifier"], p["upsamplers"],
                                              p["depths"], p["cost"])
        b = pcsr_kernels.route_upsample(**p, precision="bf16")
        c = pcsr_kernels.route_upsample(**p, precision="ieee")
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


# ---- each mode against float64 ---------------------------------------------------------

# (B, D, h, w, H, W, hidden per branch, classifier hidden, k, refine)
CASES = {
    "M2-x3.4": (2, 9, 5, 7, 17, 23, [[40, 40, 40], [10, 10]], [], 0.0, True),
    "M3-x2.2": (1, 8, 6, 5, 13, 11, [[74, 74], [20], [16, 16]], [10], 0.2, False),
    "M5-x3": (1, 7, 4, 5, 12, 15, [[58, 58], [40], [24], [20], [10, 10]], [12], 0.0, True),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_precision_against_float64(case, prec, device):
    B, D, h, w, H, W, hidden, cls_hidden, k, refine = CASES[case]
    M = len(hidden)
    p = random_problem(B, D, h, w, H, W, hidden, cls_hidden, seed=sum(map(ord, case + prec)), device=device)
    sr, cls = triton_route_upsample(p, k=k, refine=refine, precision=prec)
    assert bool(torch.isfinite(sr).all()), "a pixel was never written"
    p64 = to64(p)
    sr64, cls64 = reference.route_upsample_ref(**p64, k=k, refine=refine)
    same = check_classes(cls, cls64, decision_margin(p64, k), M)  # the classifier is fp32 in every mode
    err = residual_error(sr, sr64, p64["lr"], same, refine)
    assert err <= bound(prec, device), f"{prec}: ||delta|| / ||residual|| = {err:.2e}"
    if prec == "bf16":  # the emulation (or the GPU's bf16) really rounds: far from fp32
        assert err > 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("prec", ["tf32x3", "tf32", "bf16"])
@pytest.mark.parametrize("variant", ["fsrcnn", "carn", "srresnet"])
def test_tensor_core_error_bounds(variant, prec):
    """Each tensor-core mode's own bound, at the variants' widths, on a GPU."""
    if not torch.cuda.is_available() or not backend.availability("triton", "cuda")[0]:
        pytest.skip("needs a GPU and the triton backend")
    D, heavy, light, cls_hidden = {"fsrcnn": (48, [58] * 4, [10] * 3, []), "carn": (52, [74] * 4, [20] * 3, [10, 10]),
                                   "srresnet": (58, [170] * 4, [40] * 3, [20, 20])}[variant]
    p = random_problem(2, D, 67, 93, 268, 372, [heavy, light], cls_hidden, seed=9, device="cuda")
    sr, cls = triton_route_upsample(p, k=0.0, refine=True, precision=prec)
    p64 = to64(p)
    sr64, cls64 = reference.route_upsample_ref(**p64, k=0.0, refine=True)
    same = check_classes(cls, cls64, decision_margin(p64, 0.0), 2)
    err = residual_error(sr, sr64, p64["lr"], same, True)
    assert err <= REL_BOUND[prec], f"{variant} {prec}: {err:.2e}"


# ---- the quality budget with the authors' checkpoints ------------------------------------

# The budget, and what the interpreter's crop is held to: on the 64x64 crop below (a flat
# region at 38.8 dB), bf16 FSRCNN-PCSR measured -0.021 dB against ieee (CARN-PCSR within
# 0.01), so bf16 misses the 0.01 dB budget there; the crop is held to 0.03 dB for bf16 and
# the whole image, on a GPU, to the budget for every mode.
BUDGET_DB = 0.01
CROP_BF16_DB = 0.03


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fsrcnn-pcsr-phase1.pth", "carn-pcsr-phase1.pth"])
def test_psnr_change_within_budget(name):
    """|PSNR(precision) - PSNR(ieee)| on the authors' demo image: a 64x64 HR crop under the
    interpreter (a few seconds per mode), the whole image on a GPU."""
    from pcsr import checkpoint
    from pcsr.imageio import load_image
    from pcsr.imresize import imresize
    from pcsr.metrics import psnr

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if not backend.availability("triton", dev)[0]:
        pytest.skip(f"triton is not available for {dev} tensors")
    model = checkpoint.load(official_file(name), dev)
    hr = load_image(official_file("demo_HR.png")).rgb.to(dev)
    if dev == "cpu":
        hr = hr[:, 480:544, 700:764]
    H, W = hr.shape[-2:]
    hr = hr[:, : H // 4 * 4, : W // 4 * 4][None]
    lr = imresize(hr, size=(hr.shape[-2] // 4, hr.shape[-1] // 4))
    out = {}
    with torch.no_grad(), pcsr_kernels.use_backend("triton"):
        for prec in PRECISIONS:
            with pcsr_kernels.use_precision(prec):
                # the kernels' modes alone: the backbone's bf16 is tested in test_fast_inference.py
                sr, _ = model(lr, scale=4, k=0.0, refine=True, backbone_precision="ieee")
            out[prec] = psnr(sr, hr, shave=4)
    print(name, dev, {k: round(v - out["ieee"], 4) for k, v in out.items()})
    for prec in PRECISIONS:
        limit = CROP_BF16_DB if (dev == "cpu" and prec == "bf16") else BUDGET_DB
        assert abs(out[prec] - out["ieee"]) <= limit, (prec, out)
