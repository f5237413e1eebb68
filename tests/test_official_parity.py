"""The authors' numbers on their demo image (x4, the protocol of `pcsr eval`).

Figures measured by running the authors' code (demo_log.txt and the foundation issue):
PSNR within +/-0.01 dB, GFLOPs within +/-0.5 %, heavy fraction within +/-0.002.
Skipped when the authors' files (outside the repository) are absent.
"""
import pytest
import torch

from conftest import official_file
from pcsr import checkpoint
from pcsr.evaluate import evaluate
from pcsr.imageio import load_image
from pcsr.imresize import imresize
from pcsr.metrics import psnr


@pytest.fixture(scope="module")
def hr():
    return load_image(official_file("demo_HR.png")).rgb


@pytest.fixture(scope="module")
def carn_pcsr():
    return checkpoint.load(official_file("carn-pcsr-phase1.pth"))


def _close(rec, psnr_db, gflops, heavy=None):
    assert rec["psnr"] == pytest.approx(psnr_db, abs=0.01)
    assert rec["gflops"] == pytest.approx(gflops, rel=0.005)
    if heavy is not None:
        assert rec["heavy_fraction"] == pytest.approx(heavy, abs=0.002)


def test_carn_pcsr_adm_no_refine_and_carn_x4(hr, carn_pcsr):
    rec = evaluate(carn_pcsr, hr, 4, adaptive=True, refine=False, original=checkpoint.load(official_file("carn-x4.pth")))
    _close(rec, 29.48, 74.03, 0.145)
    assert rec["original_psnr"] == pytest.approx(29.49, abs=0.01)
    assert rec["original_gflops"] == pytest.approx(130.91, rel=0.005)
    assert rec["bicubic_psnr"] == pytest.approx(27.08, abs=0.01)


def test_carn_pcsr_k0_refine(hr, carn_pcsr):
    _close(evaluate(carn_pcsr, hr, 4, k=0.0, refine=True), 29.48, 84.27, 0.291)


def test_fsrcnn_pcsr_k0_refine_and_fsrcnn_x4(hr):
    model = checkpoint.load(official_file("fsrcnn-pcsr-phase1.pth"))
    rec = evaluate(model, hr, 4, k=0.0, refine=True, original=checkpoint.load(official_file("fsrcnn-x4.pth")))
    _close(rec, 28.47, 17.67, 0.262)
    assert rec["original_psnr"] == pytest.approx(28.50, abs=0.01)
    assert rec["original_gflops"] == pytest.approx(52.98, rel=0.005)


# Measured on this project's CPU backends (float32, x86): cpu 84.39 dB, reference 84.40 dB,
# i.e. 1,317 and 1,313 of the 5,564,160 8-bit values one level off (output values within
# float rounding of a quantisation step), none off by more. The package rounds the
# relative-coordinate tables once from their exact values (pcsr_kernels/geometry.py) where
# the authors' code chains float32 operations (~n * 1e-7 apart): with their chain this was
# 90.1 dB, and the PSNR against the HR image moves by 1.6e-5 dB. The bound is 0.5 dB below
# the lower value. Changes that the former bound of 45 dB let through fail it: the light
# branch's output moved by 1e-3 gives 54.8 dB, an ADM tolerance of 1e-3 instead of 1e-4
# gives 59.4 dB (measured).
DEMO_PSNR_DB = 83.9


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_demo_output_matches_authors_png(hr, carn_pcsr, backend):
    """The CARN-PCSR demo output (ADM, no refinement) against the authors' demo_PCSR.png."""
    import pcsr_kernels

    ok, why = pcsr_kernels.backend.availability(backend, "cpu")
    if not ok:
        pytest.skip(why)
    theirs = load_image(official_file("demo_PCSR.png")).rgb[None]
    lr = imresize(hr[None], size=(hr.shape[1] // 4, hr.shape[2] // 4))
    with pcsr_kernels.use_backend(backend):
        sr, _ = carn_pcsr(lr, scale=4, adaptive=True, refine=False)
    levels = ((sr.clamp(0, 1) * 255).round() - (theirs.clamp(0, 1) * 255).round()).abs()
    assert float(levels.max()) <= 1, f"{int((levels > 1).sum())} values more than one 8-bit level off"
    assert psnr(sr, theirs, shave=0) >= DEMO_PSNR_DB
