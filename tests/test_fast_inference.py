"""The fast inference paths: zero-padded backbones, the prepared forms (channels_last,
bf16), ``compile_for``, ``torch.compile(model)`` and the frame pipeline, each checked
against the plain model's outputs. GPU tests skip without a GPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import pcsr_kernels
from pcsr.backbones import fold_batchnorm, make_backbone
from pcsr.frames import stream_batches
from pcsr.inference import Form, default_form, prepare_backbone
from pcsr.model import PCSR, SRModel
from pcsr.padding import pad_channels, padding_plan

from conftest import official_file

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

# (family, constructor arguments): the authors' PCSR widths (unaligned) and small ones
PADDABLE = [("carn", dict(nf=52, group=4)), ("srresnet", dict(nf=58, nb=2)), ("fsrcnn", dict(d=48, s=12, m=4)),
            ("carn", dict(nf=20, group=4)), ("srresnet", dict(nf=13, nb=1))]


def _randomised(name, kw, dtype=torch.float64, seed=0):
    """A backbone with random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    m = make_backbone(name, no_upsampling=True, **kw)
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
        if isinstance(mod, nn.Conv2d):  # O(1) activations through the whole depth
            nn.init.normal_(mod.weight, std=(2.0 / (mod.in_channels // mod.groups * mod.weight[0, 0].numel())) ** 0.5)
    return m.to(dtype).eval()


# --- padding ------------------------------------------------------------------------------

def test_padding_plans_of_the_authors_widths():
    assert padding_plan(make_backbone("srresnet", nf=58, no_upsampling=True), 8)["nf"] == (58, 64)
    assert padding_plan(make_backbone("carn", nf=52, group=4, no_upsampling=True), 8)["nf"] == (52, 64)
    assert padding_plan(make_backbone("fsrcnn", d=48, s=12, no_upsampling=True), 8)["s"] == (12, 16)
    # aligned already, or a tail whose widths would change: nothing to pad
    assert padding_plan(make_backbone("srresnet", nf=64, no_upsampling=True), 8) is None
    assert padding_plan(make_backbone("carn", nf=52, group=4, scale=4), 8) is None


@pytest.mark.parametrize("name,kw", PADDABLE, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_padded_backbone_computes_the_same_function(name, kw):
    """float64: the padded network sums extra exact zeros, nothing else, so it agrees with the
    folded unpadded one to float64 rounding; float32 likewise to float32 rounding."""
    m = _randomised(name, kw)
    x = torch.rand(2, 3, 11, 13, dtype=torch.float64) - 0.4
    with torch.no_grad():
        ref = fold_batchnorm(m)(x)
        padded = pad_channels(m, 8)
        got = padded(x)
        assert got.shape == ref.shape and padded.out_dim == ref.shape[1]
        # measured: <= 4e-16 relative (the sum order of a wider convolution differs)
        assert float((got - ref).norm() / ref.norm()) <= 1e-13
        m32 = m.float()
        ref32, got32 = fold_batchnorm(m32)(x.float()), pad_channels(m32, 8)(x.float())
        assert float((got32 - ref32).norm() / ref32.norm()) <= 1e-5


def test_padded_channels_stay_exactly_zero():
    """Every padded convolution's extra output channels are exactly 0 after its activation
    (what makes the padding invisible to the layers that read them)."""
    m = _randomised("carn", dict(nf=52, group=4), torch.float32)
    padded = pad_channels(m, 8)
    per, pper = 13, 16
    real = torch.tensor([g * pper + i for g in range(4) for i in range(per)])
    pad = torch.tensor(sorted(set(range(64)) - set(real.tolist())))
    seen = []

    def hook(mod, inp, out):
        if out.shape[1] == 64:
            seen.append(out[:, pad].abs().max().item())
    handles = [c.register_forward_hook(hook) for c in padded.modules() if isinstance(c, nn.Conv2d)]
    with torch.no_grad():
        padded(torch.rand(1, 3, 9, 10))
    for h in handles:
        h.remove()
    assert len(seen) >= 20 and max(seen) == 0.0


def test_pad_channels_rejects_a_bad_multiple():
    with pytest.raises(ValueError, match="multiple"):
        pad_channels(make_backbone("carn", nf=16, no_upsampling=True), 0)


# --- prepared forms -------------------------------------------------------------------------

@pytest.mark.parametrize("name,kw", PADDABLE[:3], ids=["carn", "srresnet", "fsrcnn"])
@pytest.mark.parametrize("form", [Form(channels_last=True), Form(channels_last=False, pad=8),
                                  Form(channels_last=True, pad=8)], ids=["cl", "pad", "cl+pad"])
def test_prepared_forms_equal_the_plain_backbone(name, kw, form):
    m = _randomised(name, kw, torch.float32)
    x = torch.rand(2, 3, 10, 12)
    with torch.no_grad():
        ref = prepare_backbone(m, Form(channels_last=False))(x)
        got = prepare_backbone(m, form)(x)
    assert got.is_contiguous() and got.dtype == torch.float32
    # float32 rounding only (a channels_last or wider convolution sums in another order):
    # measured <= 3e-7 relative here, 2.5e-6 on the authors' CARN-PCSR at 1K
    assert float((got - ref).norm() / ref.norm()) <= 1e-5


def test_default_forms_follow_the_precision():
    assert default_form("cpu", "ieee") == Form(channels_last=True, pad=1, autocast=None, tf32=False)
    assert default_form("cpu", "tf32").tf32 is False  # no TF32 on the CPU
    assert default_form("cpu", "bf16").autocast is torch.bfloat16
    cuda = {p: default_form("cuda", p) for p in ("ieee", "tf32x3", "tf32", "bf16")}
    assert not cuda["ieee"].tf32 and not cuda["tf32x3"].tf32 and cuda["tf32"].tf32
    assert cuda["bf16"].autocast is torch.bfloat16 and all(f.pad == 8 and f.channels_last for f in cuda.values())
    with pytest.raises(ValueError, match="precision must be one of"):
        default_form("cpu", "fp8")


def _small_pcsr(seed=0):
    torch.manual_seed(seed)
    return PCSR("carn", dict(nf=20, group=4), [[24] * 2, [8] * 2], [8], rgb_mean=(0.45, 0.44, 0.40)).eval()


def test_model_forward_equals_the_plain_computation():
    """model(lr) (prepared backbone) against the folded NCHW backbone + route_upsample."""
    m = _small_pcsr()
    lr = torch.rand(2, 3, 9, 11)
    sr, cls = m(lr, scale=4)
    x = m.normalise(lr)
    feat = m._inference_backbone()(x)
    ref_sr, ref_cls = pcsr_kernels.route_upsample(
        feat, x, (36, 44), m.classifier.flat_params(), [p for u in m.upsamplers for p in u.flat_params()],
        [len(u.widths) - 1 for u in m.upsamplers], m.cost(4), 0.0, False, True)
    assert (cls == ref_cls).float().mean() >= 0.999  # a class may flip at an exact tie only
    same = cls == ref_cls
    torch.testing.assert_close(sr.permute(0, 2, 3, 1)[same], m.denormalise(ref_sr).permute(0, 2, 3, 1)[same],
                               rtol=1e-5, atol=1e-5)


def test_prepared_copy_is_rebuilt_when_weights_change():
    m = _small_pcsr()
    lr = torch.rand(1, 3, 8, 8)
    a, _ = m(lr, scale=4)
    with torch.no_grad():
        m.backbone.entry.weight.mul_(0.5)
    b, _ = m(lr, scale=4)
    assert not torch.allclose(a, b)
    m2 = _small_pcsr()
    with torch.no_grad():
        m2.backbone.entry.weight.mul_(0.5)
    torch.testing.assert_close(b, m2(lr, scale=4)[0])


def test_bad_precision_names_the_argument():
    m = _small_pcsr()
    with pytest.raises(ValueError, match="precision must be one of"):
        m(torch.rand(1, 3, 8, 8), scale=4, precision="fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        m(torch.rand(1, 3, 8, 8), scale=4, backbone_precision="half")


def test_bf16_backbone_psnr_on_the_demo_crop():
    """bf16 autocast (oneDNN's bf16 convolutions on this CPU) against fp32, backbone only (the
    cpu backend computes the MLPs exactly): the authors' CARN-PCSR on a 256x256 HR crop of
    the demo image. Measured here: -0.004 dB on the whole image, within 0.01 dB on crops;
    the bound is the issue's end-to-end bf16 budget, 0.02 dB."""
    from pcsr import checkpoint
    from pcsr.imageio import load_image
    from pcsr.imresize import imresize
    from pcsr.metrics import psnr

    model = checkpoint.load(official_file("carn-pcsr-phase1.pth"), "cpu")
    hr = load_image(official_file("demo_HR.png")).rgb[None, :, 400:656, 600:856]
    lr = imresize(hr, size=(64, 64))
    sr32, c32 = model(lr, scale=4, precision="ieee")
    sr16, c16 = model(lr, scale=4, precision="bf16")
    d = psnr(sr16, hr, shave=4) - psnr(sr32, hr, shave=4)
    print(f"bf16 - fp32 PSNR: {d:+.4f} dB, classes flipped {(c16 != c32).float().mean():.4f}")
    assert abs(d) <= 0.02
    assert sr16.dtype == torch.float32 and not torch.equal(sr16, sr32)  # bf16 really ran


# --- compile_for ----------------------------------------------------------------------------

def test_compile_for_on_cpu_equals_the_model():
    m = _small_pcsr()
    lr = torch.rand(2, 3, 9, 11)
    run = m.compile_for(lr.shape, scale=4, k=0.5)
    assert not run.graph
    sr, cls = run(lr)
    ref_sr, ref_cls = m(lr, scale=4, k=0.5)
    assert torch.equal(cls, ref_cls)
    torch.testing.assert_close(sr, ref_sr, rtol=0, atol=0)
    orig = SRModel("fsrcnn", dict(d=16, s=8, m=2, scale=4)).eval()
    torch.testing.assert_close(orig.compile_for(lr.shape)(lr), orig(lr), rtol=0, atol=0)


def test_compile_for_refuses_clearly():
    m = _small_pcsr()
    with pytest.raises(ValueError, match="graph=True needs a model on a CUDA device"):
        m.compile_for((1, 3, 8, 8), scale=4, graph=True)
    with pytest.raises(ValueError, match=r"shape must be \[B, 3, h, w\].*\(1, 4, 8, 8\)"):
        m.compile_for((1, 4, 8, 8), scale=4)
    run = m.compile_for((1, 3, 8, 8), scale=4)
    with pytest.raises(ValueError, match=r"lr must be a float tensor of shape \(1, 3, 8, 8\).*\(1, 3, 8, 9\)"):
        run(torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="own x4"):
        SRModel("fsrcnn", dict(d=16, s=8, m=2, scale=4)).eval().compile_for((1, 3, 8, 8), scale=2)
    with pytest.raises(ValueError, match="training mode"):
        m.train().compile_for((1, 3, 8, 8), scale=4)


# --- torch.compile --------------------------------------------------------------------------

@pytest.mark.parametrize("adaptive", [False, True], ids=["k", "adm"])
def test_torch_compile_fullgraph_equals_eager(adaptive):
    """The whole forward in one graph through the ops' fake kernels (aot_eager: Dynamo,
    AOTAutograd and the fake kernels, no C++ compiler needed)."""
    m = _small_pcsr()
    lr = torch.rand(1, 3, 7, 9)
    ref_sr, ref_cls = m(lr, scale=4, adaptive=adaptive)
    torch._dynamo.reset()
    cm = torch.compile(m, fullgraph=True, backend="aot_eager")
    sr, cls = cm(lr, scale=4, adaptive=adaptive)
    assert torch.equal(cls, ref_cls)
    torch.testing.assert_close(sr, ref_sr, rtol=1e-5, atol=1e-5)  # BatchNorm unfolded: rounding
    orig = SRModel("carn", dict(nf=16, group=4, scale=2)).eval()
    torch.testing.assert_close(torch.compile(orig, fullgraph=True, backend="aot_eager")(lr), orig(lr),
                               rtol=1e-5, atol=1e-5)


# --- frame pipeline -------------------------------------------------------------------------

def test_stream_batches_on_cpu_keeps_order_and_values():
    m = _small_pcsr()
    frames = [torch.randint(0, 256, (2, 8, 10, 3), dtype=torch.uint8) for _ in range(3)]
    prep = lambda u8: u8.permute(0, 3, 1, 2).float().div_(255)  # noqa: E731
    run = m.compile_for((2, 3, 8, 10), scale=4)
    outs = list(stream_batches(run, frames, "cpu", prepare=prep))
    assert len(outs) == 3
    for f, (sr, cls) in zip(frames, outs):
        ref_sr, ref_cls = m(prep(f), scale=4)
        assert torch.equal(cls, ref_cls) and torch.equal(sr, ref_sr)
    with pytest.raises(TypeError, match="tensor or a tuple of tensors"):
        list(stream_batches(lambda x: "no", frames, "cpu"))
    with pytest.raises(TypeError, match="batch 1 is a list"):
        list(stream_batches(run, [frames[0], [1, 2]], "cpu", prepare=prep))


# --- GPU ----------------------------------------------------------------------------------------

def _cuda_triton():
    from pcsr_kernels import backend

    if not CUDA or not backend.availability("triton", "cuda")[0]:
        pytest.skip("needs CUDA and the triton backend")


def _agree(sr, cls, ref_sr, ref_cls, precision):
    """Classes may flip where the two runs' rounding differs near a tie (cuDNN picks other
    algorithms under cudnn.benchmark); values are compared where the class agrees, as a
    relative L2 error: 1e-4 in fp32 (algorithm changes alone), 1e-2 in bf16."""
    flips = float((cls != ref_cls).double().mean())
    same = (cls == ref_cls).unsqueeze(1).expand_as(sr)
    a, b = sr[same].double(), ref_sr[same].double()
    rel = float((a - b).norm() / b.norm())
    bf16 = precision == "bf16"
    assert flips <= (1e-2 if bf16 else 1e-3) and rel <= (1e-2 if bf16 else 1e-4), (flips, rel)


@needs_cuda
@pytest.mark.parametrize("precision", ["ieee", "bf16"])
def test_compile_for_cuda_graph_replay_equals_eager(precision):
    _cuda_triton()
    m = _small_pcsr().cuda()
    lr = torch.rand(2, 3, 33, 47, device="cuda")
    run = m.compile_for(lr.shape, scale=4, precision=precision)
    assert run.graph
    for _ in range(2):  # a replay reads the new input, not the capture's
        ref_sr, ref_cls = m(lr, scale=4, precision=precision)
        sr, cls = run(lr)
        _agree(sr, cls, ref_sr, ref_cls, precision)
        lr = torch.rand_like(lr)
    orig = SRModel("carn", dict(nf=16, group=4, scale=4)).eval().cuda()
    got, ref = orig.compile_for(lr.shape, precision=precision)(lr), orig(lr, precision=precision)
    assert float((got - ref).norm() / ref.norm()) <= (1e-2 if precision == "bf16" else 1e-4)


@needs_cuda
def test_padded_backbone_on_cuda_equals_unpadded():
    for name, kw in PADDABLE[:3]:
        m = _randomised(name, kw, torch.float32).cuda()
        x = torch.rand(2, 3, 40, 52, device="cuda")
        with torch.no_grad():
            ref = prepare_backbone(m, Form(channels_last=False))(x)
            got = prepare_backbone(m, default_form("cuda", "ieee"))(x)
        assert float((got - ref).norm() / ref.norm()) <= 1e-5, name


@needs_cuda
def test_stream_batches_on_cuda_equals_direct_calls():
    _cuda_triton()
    m = _small_pcsr().cuda()
    frames = [torch.randint(0, 256, (2, 24, 30, 3), dtype=torch.uint8) for _ in range(5)]
    prep = lambda u8: u8.permute(0, 3, 1, 2).float().div_(255)  # noqa: E731
    run = m.compile_for((2, 3, 24, 30), scale=4, precision="ieee")
    # copy=False: the graph's static outputs, overwritten by the next replay; the pipeline
    # must copy them out before that
    outs = list(stream_batches(lambda x: run(x, copy=False), frames, "cuda", prepare=prep))
    assert len(outs) == 5
    for f, (sr, cls) in zip(frames, outs):
        assert sr.device.type == "cpu" and sr.is_pinned()
        ref_sr, ref_cls = run(prep(f.cuda()))
        assert torch.equal(cls, ref_cls.cpu()) and torch.equal(sr, ref_sr.cpu())


@needs_cuda
@pytest.mark.parametrize("name", ["carn-pcsr-phase1.pth", "fsrcnn-pcsr-phase1.pth"])
def test_bf16_end_to_end_psnr_on_the_demo_image_cuda(name):
    """bf16 (backbone autocast and the Triton MLPs) against ieee, both as compile_for's CUDA
    graph, on the whole demo image: the issue's budget, |dPSNR| <= 0.02 dB."""
    _cuda_triton()
    from pcsr import checkpoint
    from pcsr.evaluate import centre_crop
    from pcsr.imageio import load_image
    from pcsr.imresize import imresize
    from pcsr.metrics import psnr

    model = checkpoint.load(official_file(name), "cuda")
    hr = centre_crop(load_image(official_file("demo_HR.png")).rgb.cuda(), 4)[None]
    lr = imresize(hr, size=(hr.shape[-2] // 4, hr.shape[-1] // 4))
    out = {}
    for prec in ("ieee", "bf16"):
        sr, _ = model.compile_for(lr.shape, scale=4, precision=prec)(lr)
        out[prec] = psnr(sr, hr, shave=4)
    print(name, {k: round(v, 4) for k, v in out.items()}, f"d = {out['bf16'] - out['ieee']:+.4f} dB")
    assert abs(out["bf16"] - out["ieee"]) <= 0.02


@needs_cuda
def test_torch_compile_inductor_on_cuda_equals_eager():
    _cuda_triton()
    m = _small_pcsr().cuda()
    lr = torch.rand(1, 3, 16, 20, device="cuda")
    ref_sr, ref_cls = m(lr, scale=4, precision="ieee")
    torch._dynamo.reset()
    with pcsr_kernels.use_precision("ieee"):
        sr, cls = torch.compile(m, fullgraph=True)(lr, scale=4)
    # Inductor's convolutions follow PyTorch's own TF32 default for cuDNN (on): bf16's bound
    _agree(sr, cls, ref_sr, ref_cls, "bf16")
