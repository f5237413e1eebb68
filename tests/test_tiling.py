"""Exact tiled inference: receptive fields, tiles equal to the whole image, plans, the API."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import pcsr
import pcsr_kernels
import pcsr_kernels.backend
from conftest import official_file
from pcsr import tiling
from pcsr.backbones import make_backbone
from pcsr.footprint import footprint, receptive_field
from pcsr.memory import TooLargeError
from pcsr.model import PCSR

# The authors' SRResNet-PCSR backbone (DESIGN.md); FSRCNN and CARN come from the bundled
# models' own configs, which are the authors' too.
SRRESNET = {"nf": 58, "nb": 16}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiles are many small convolutions; on a CPU shared with other jobs, OpenMP's spinning
    barriers make them two orders of magnitude slower with 2 threads than with 1."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _backbone_configs():
    cfgs = [(name, pcsr.load(name).config["backbone_args"]) for name in ("fsrcnn", "carn")]
    return cfgs + [("srresnet", SRRESNET)]


# --- receptive field ------------------------------------------------------------------

def _empirical_changes(backbone: nn.Module, radius: int) -> torch.Tensor:
    """Which features change when one LR pixel (the centre of a 2R+9 image) changes."""
    n = 2 * radius + 9
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, n, n, generator=g, dtype=torch.float64)
    y = x.clone()
    y[0, :, n // 2, n // 2] += 1.0
    return (backbone(y) - backbone(x)).abs().amax(1)[0] > 0  # [n, n]


@pytest.mark.parametrize("name,args", _backbone_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_receptive_field_from_the_architecture_is_the_empirical_one(name, args):
    """The radius walked from the traced graph must be exactly the square of features that
    one perturbed input pixel reaches. Weights are redrawn at unit gain in float64: the
    authors' 0.1-scaled init shrinks a change by 10x per conv, and after MSRResNet's 33
    convs it falls below float64 resolution at the edge of the field."""
    bb = make_backbone(name, no_upsampling=True, **args).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64) / fan_in ** 0.5)
    ry, rx = receptive_field(bb)
    assert ry == rx
    with torch.no_grad():
        changed = _empirical_changes(bb, ry)
    n = changed.shape[0]
    expect = torch.zeros(n, n, dtype=torch.bool)
    expect[n // 2 - ry:n // 2 + ry + 1, n // 2 - rx:n // 2 + rx + 1] = True
    assert torch.equal(changed, expect), f"{name}: computed radius {ry}, empirical field differs"
    assert ry == {"fsrcnn": 6, "carn": 19, "srresnet": 33}[name]


def test_receptive_field_with_trained_weights_matches_too():
    m = pcsr.load("fsrcnn").double()
    bb = m._inference_backbone()
    r = receptive_field(bb)[0]
    with torch.no_grad():
        changed = _empirical_changes(bb, r)
    rows = torch.nonzero(changed.any(1)).flatten()
    n = changed.shape[0]
    assert (n // 2 - int(rows.min()), int(rows.max()) - n // 2) == (r, r)


class _Strided(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Upsampled(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2.0)


@pytest.mark.parametrize("module,match", [
    (_Strided(), "stride"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, 1, 1)), "MaxPool2d"),
    (nn.Sequential(nn.Conv2d(3, 4, 2, padding=1)), "even kernel"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, padding=0)), "does not keep the size"),
    (_Upsampled(), "interpolate"),
])
def test_footprint_refuses_layers_it_cannot_reason_about(module, match):
    with pytest.raises(NotImplementedError, match=match):
        footprint(module)


# --- tiled == whole -----------------------------------------------------------------------

def _heavy_mass(model, lr, scale):
    x = model.normalise(lr)
    feat = model._inference_backbone()(x)
    H, W = round(lr.shape[-2] * scale), round(lr.shape[-1] * scale)
    probs = pcsr_kernels.classify(feat, (H, W), model.classifier.flat_params())
    return probs


def assert_tiled_equals_whole(model, lr, scale, sr, cls, whole, whole_cls, k=0.0, adaptive=False, atol=1e-5,
                              tie=1e-4):
    """Classes identical except at ties of the whole-image decision (scores within ``tie``
    of each other, or an ADM heavy mass within ``tie`` of the cut between clusters), where
    float rounding may fall either way; sr within ``atol`` except next to such a tie (the
    branch and refinement differ there)."""
    assert sr.shape == whole.shape and cls.shape == whole_cls.shape and cls.dtype == torch.uint8
    diff = cls.long() != whole_cls
    if diff.any():
        probs = _heavy_mass(model, lr, scale)
        if adaptive:
            s = probs[..., : model.num_heavy].sum(-1)
            heavy = whole_cls < model.num_heavy
            for b in range(lr.shape[0]):
                lo, hi = s[b][~heavy[b]].max(), s[b][heavy[b]].min()  # the two sides of the cut
                near = torch.minimum((s[b] - lo).abs(), (s[b] - hi).abs()) <= tie
                assert near[diff[b]].all(), "ADM classes differ away from the cluster boundary"
        else:
            score = torch.log(probs) - k * torch.log(model.cost(scale))
            top2 = score.topk(2, dim=-1).values
            assert (top2[..., 0] - top2[..., 1])[diff].max() <= tie, "classes differ away from a tie"
        assert diff.float().mean() < 1e-3
    near = F.max_pool2d(diff.float()[:, None], 3, 1, 1)[:, 0] > 0
    err = (sr - whole).abs().amax(1)
    assert err[~near].max() <= atol, f"max abs diff {err[~near].max():.3g} > {atol}"


@pytest.mark.parametrize("name", ["fsrcnn", "carn"])
@pytest.mark.parametrize("mode", [dict(k=0.0), dict(adaptive=True), dict(k=1.0, refine=False)],
                         ids=["k0-refine", "adm-refine", "k1-norefine"])
def test_tiles_equal_the_whole_image_bundled(name, mode):
    """Several tiles per axis, odd sizes; k=0 and ADM with refinement, a k>0 run without."""
    m = pcsr.load(name)
    g = torch.Generator().manual_seed(3)
    lr = torch.rand(1, 3, 29, 35, generator=g)
    whole, whole_cls = m(lr, scale=4, **mode)
    p = tiling.plan(m, lr.shape, 4, tile=(8, 9), refine=mode.get("refine", True))
    assert len(p.ys) == 4 and len(p.xs) == 4
    sr, cls = tiling.upscale(m, lr, 4, tile=(8, 9), **mode)
    assert_tiled_equals_whole(m, lr, 4, sr, cls, whole, whole_cls, k=mode.get("k", 0.0),
                              adaptive=mode.get("adaptive", False))


@pytest.mark.parametrize("file", ["fsrcnn-pcsr-phase1.pth", "carn-pcsr-phase1.pth"])
def test_tiles_equal_the_whole_image_authors_checkpoints(file):
    from pcsr.imageio import read_image

    m = pcsr.load(official_file(file))
    lr = read_image(official_file("demo_LRx4.png"))[:, :, 101:140, 203:250]  # 39x47
    for mode in (dict(k=0.0), dict(adaptive=True)):
        whole, whole_cls = m(lr, scale=4, **mode)
        sr, cls = tiling.upscale(m, lr, 4, tile=(10, 12), **mode)
        assert_tiled_equals_whole(m, lr, 4, sr, cls, whole, whole_cls, adaptive=mode.get("adaptive", False))


def test_tiles_equal_the_whole_image_for_batches_and_other_scales():
    m = pcsr.load("fsrcnn")
    g = torch.Generator().manual_seed(4)
    lr = torch.rand(2, 3, 17, 22, generator=g)
    for scale, tile in ((3, 5), (2, (4, 7)), (1.2, 6)):  # 1.2 = 6/5: cuts every 5 LR pixels
        for mode in (dict(k=0.5), dict(adaptive=True)):
            whole, whole_cls = m(lr, scale=scale, **mode)
            sr, cls = tiling.upscale(m, lr, scale, tile=tile, **mode)
            assert tiling.plan(m, lr.shape, scale, tile=tile).tiles > 1
            assert_tiled_equals_whole(m, lr, scale, sr, cls, whole, whole_cls, k=mode.get("k", 0.0),
                                      adaptive=mode.get("adaptive", False))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_tiles_are_exact_to_conv_rounding(backend):
    """The relative-coordinate tables are exact values rounded once (a function of the
    pixel's phase, not of the image size), so the tiles must agree with the whole image to
    the convolutions' own rounding (1e-6), classes differing only at ties. For ADM "tie" is
    wider (1e-5 of heavy mass): Lloyd's steps amplify the classifier's last-bit differences
    (sums in bands whose size depends on the tile) when many pixels of a smooth image sit
    near a cut; measured: heavy masses within 1.5e-7, final centres 5e-6 apart, mismatches
    1.3e-6 from it."""
    ok, why = pcsr_kernels.backend.availability(backend, "cpu")
    if not ok:
        pytest.skip(why)
    m = pcsr.load("fsrcnn")
    g = torch.Generator().manual_seed(5)
    lr = F.interpolate(torch.rand(1, 3, 24, 30, generator=g), size=(96, 120), mode="bicubic").clamp(0, 1)
    with pcsr_kernels.use_backend(backend):
        for mode in (dict(k=0.0), dict(adaptive=True)):
            whole, whole_cls = m(lr, scale=4, **mode)
            sr, cls = tiling.upscale(m, lr, 4, tile=(31, 37), **mode)
            adaptive = mode.get("adaptive", False)
            assert_tiled_equals_whole(m, lr, 4, sr, cls, whole, whole_cls, adaptive=adaptive,
                                      atol=1e-6, tie=1e-5 if adaptive else 1e-6)


# --- non-integer scales -----------------------------------------------------------------

def test_non_integer_scale_ties_are_refused_not_tiled_inexactly():
    """At x2.5 (= 5/2) every fifth HR row is an exact tie between two LR rows, which the
    float32 tables of a tile round differently from the whole image's."""
    m = pcsr.load("fsrcnn")
    lr = torch.rand(1, 3, 30, 34)
    with pytest.raises(tiling.TilingError, match=r"row axis exactly: 30 LR -> 75 HR .*ratio 5/2.*tie"):
        tiling.upscale(m, lr, 2.5, tile=8)
    sr, cls = tiling.upscale(m, lr, 2.5)  # fits whole: nothing to refuse
    whole, whole_cls = m(lr, scale=2.5)
    assert torch.equal(sr, whole) and torch.equal(cls.long(), whole_cls)
    with pytest.raises(tiling.TilingError, match=r"must be tiled, but cannot tile"):
        tiling.upscale(m, lr, 2.5, max_memory=4 << 20)


def test_a_scale_whose_ratio_cannot_be_cut_keeps_the_axis_whole():
    m = pcsr.load("fsrcnn")
    # x1.2: 101 -> 121 rows (ratio 121/101: no cut), 40 -> 48 columns (6/5: cuts every 5)
    p = tiling.plan(m, (1, 3, 101, 40), 1.2, tile=10)
    assert len(p.ys) == 1 and p.ys[0].core == (0, 121) and len(p.xs) == 4
    assert [s.crop[0] % 5 for s in p.xs] == [0] * 4


# --- plans and the API ------------------------------------------------------------------

def test_plan_owns_every_pixel_once_and_fits_its_budget():
    m = pcsr.load("carn")
    shape = (1, 3, 300, 500)
    whole = tiling.plan(m, shape, 4, max_memory=1 << 40)
    assert whole.tiles == 1
    budget = whole.estimate.total // 3
    p = tiling.plan(m, shape, 4, max_memory=budget)
    assert p.tiles > 1 and p.estimate.total <= budget
    for spans, N, n, r in ((p.ys, 1200, 300, 19), (p.xs, 2000, 500, 19)):
        assert spans[0].core[0] == 0 and spans[-1].core[1] == N
        assert all(a.core[1] == b.core[0] for a, b in zip(spans, spans[1:]))
        for s in spans:  # crop holds the core and its refinement margin; halo = crop + r
            assert s.hr[0] <= max(0, s.core[0] - 1) and min(N, s.core[1] + 1) <= s.hr[1]
            assert s.halo == (max(0, s.crop[0] - r), min(n, s.crop[1] + r))
    # a bigger budget never gives smaller tiles
    q = tiling.plan(m, shape, 4, max_memory=2 * budget)
    assert q.tiles <= p.tiles


def test_too_large_names_sizes_and_bytes():
    m = pcsr.load("fsrcnn")
    with pytest.raises(TooLargeError, match=r"1x3x2000x3000 -> 8000x12000 does not fit in 1.00 MB "
                                            r"\(1000000 bytes\): the outputs alone need 1.25 GB \(1248000000"):
        tiling.plan(m, (1, 3, 2000, 3000), 4, max_memory=10 ** 6)
    out = 8000 * 12000 * (3 * 4 + 1)
    with pytest.raises(TooLargeError, match="even the smallest tiles need"):
        tiling.plan(m, (1, 3, 2000, 3000), 4, max_memory=out + 1000)
    with pytest.raises(TooLargeError, match="tiles of 500x500 LR pixels"):
        tiling.plan(m, (1, 3, 2000, 3000), 4, tile=500, max_memory=out + 10 ** 6)
    # the uint8 output needs a quarter of the float32 one
    p = tiling.plan(m, (1, 3, 2000, 3000), 4, max_memory=out, out_dtype=torch.uint8)
    assert p.estimate.parts["outputs"] == 8000 * 12000 * 4


def test_progress_output_dtype_and_classes():
    m = pcsr.load("fsrcnn")
    lr = torch.rand(1, 3, 20, 23)
    calls = []
    sr, cls = tiling.upscale(m, lr, 2, tile=8, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 9) for i in range(1, 10)] and cls.dtype == torch.uint8
    calls.clear()
    sr8, cls8 = tiling.upscale(m, lr, 2, tile=8, adaptive=True, out_dtype=torch.uint8,
                               progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 18) for i in range(1, 19)]  # two passes over 9 tiles
    whole, _ = m(lr, scale=2, adaptive=True)
    assert sr8.dtype == torch.uint8
    expect = whole.mul(255).round().clamp(0, 255).to(torch.uint8)
    # a value within float rounding of a .5 step may round either way
    assert (sr8.int() - expect.int()).abs().max() <= 1 and (sr8 != expect).float().mean() < 1e-3


@pytest.mark.parametrize("kwargs,match", [
    (dict(scale=float("nan")), "scale must be a finite number"),
    (dict(scale=4, tile=0), "tile must be a positive int"),
    (dict(scale=4, tile=(3, 0)), "tile must be a positive int"),
    (dict(scale=4, max_memory=-5), "max_memory must be a positive number"),
    (dict(scale=4, k=math.inf), "k must be finite"),
    (dict(scale=4, out_dtype=torch.int32), "out_dtype must be a floating dtype or torch.uint8"),
])
def test_bad_arguments_are_named(kwargs, match):
    m = pcsr.load("fsrcnn")
    lr = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=match):
        tiling.upscale(m, lr, **kwargs)
    with pytest.raises(ValueError, match=r"lr must be an RGB batch"):
        tiling.upscale(m, lr[0], 4)
    with pytest.raises(TypeError, match="pcsr.PCSR"):
        tiling.upscale(nn.Identity(), lr, 4)
    with pytest.raises(ValueError, match=r"training mode: call model.eval\(\)"):
        tiling.upscale(pcsr.load("carn").train(), lr, 4)


def test_a_backbone_without_a_graph_runs_whole_but_is_never_tiled(monkeypatch):
    m = PCSR("fsrcnn", {"d": 8, "s": 4, "m": 1}, [[16], [8]], []).eval()
    monkeypatch.setattr(tiling.memory, "footprint", lambda *a, **k: (_ for _ in ()).throw(
        NotImplementedError("module x (Custom): unknown spatial behaviour")))
    lr = torch.rand(1, 3, 12, 12)
    sr, _ = tiling.upscale(m, lr, 2)
    assert torch.equal(sr, m(lr, scale=2)[0])
    with pytest.raises(tiling.TilingError, match="unknown spatial behaviour"):
        tiling.upscale(m, lr, 2, tile=4)
