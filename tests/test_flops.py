"""FLOP counting with the paper's rules, the MLP formula, and the routing cost vector."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pcsr.flops import branch_pixels_16x16, cost_vector, count_flops, mlp_flops


def _no_hooks_left(module: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_hooks_with_kwargs for m in module.modules())


def test_small_net_hand_counted():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 2 * 9*3 * (2*8*5*6)
        nn.BatchNorm2d(8),  # 2 * 480
        nn.PReLU(),  # 480
        nn.Conv2d(8, 4, 1),  # 2 * 8 * (2*4*5*6)
        nn.Flatten(),
        nn.Linear(120, 7),  # 2 * 2 * 120 * 7
        nn.ReLU(),
    ).eval()
    x = torch.rand(2, 3, 5, 6)
    assert count_flops(net, x) == 2 * 27 * 480 + 2 * 480 + 480 + 2 * 8 * 240 + 2 * 2 * 120 * 7
    assert _no_hooks_left(net)


def test_linear_counts_every_leading_dim():
    lin = nn.Linear(10, 3)
    assert count_flops(lin, torch.rand(2, 7, 10)) == 2 * 14 * 10 * 3


def test_conv_transpose_charged_per_output_element():
    # FSRCNN's x4 tail: 56 -> 3, 9x9, stride 4, padding 3, output_padding 1: [5, 7] -> [20, 28].
    tail = nn.ConvTranspose2d(56, 3, 9, stride=4, padding=3, output_padding=1)
    x = torch.rand(1, 56, 5, 7)
    flops = count_flops(tail, x)
    assert flops == 2 * 81 * 56 * (3 * 20 * 28)
    # i.e. stride^2 = 16 times its real multiply-adds (each input pixel meets 81 * 3 weights).
    assert flops == 16 * 2 * (56 * 5 * 7) * 81 * 3


def test_grouped_conv():
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=4)
    assert count_flops(conv, torch.rand(1, 8, 6, 6)) == 2 * 9 * (8 // 4) * (16 * 36)


def test_reused_module_counted_per_call():
    class Thrice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1, bias=False)

        def forward(self, x):
            return self.conv(self.conv(self.conv(x)))

    assert count_flops(Thrice(), torch.rand(1, 4, 3, 3)) == 3 * 2 * 4 * 36


def test_norms_only_charged_when_affine():
    x = torch.rand(2, 4, 3, 3)
    assert count_flops(nn.BatchNorm2d(4).eval(), x) == 2 * 72
    assert count_flops(nn.BatchNorm2d(4, affine=False).eval(), x) == 0
    assert count_flops(nn.InstanceNorm2d(4, affine=True), x) == 6 * 72
    assert count_flops(nn.LayerNorm(3), x) == 8 * 72


def test_functional_ops_are_free():
    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.LeakyReLU(0.1)
            self.up = nn.PixelShuffle(2)

        def forward(self, x):
            y = self.up(self.act(x))
            return F.interpolate(y, scale_factor=2, mode="bilinear") + F.relu(y).mean()

    assert count_flops(Mix(), torch.rand(1, 8, 4, 4)) == 0


def test_keyword_input_to_a_leaf():
    class Kw(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 2)

        def forward(self, x):
            return self.lin(input=x)

    assert count_flops(Kw(), torch.rand(3, 5)) == 2 * 3 * 5 * 2


def test_hooks_removed_after_exception():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom")

    net = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        count_flops(net, torch.rand(1, 3, 2, 2))
    assert _no_hooks_left(net)
    # And a later count is not doubled by stale hooks.
    assert count_flops(net.conv, torch.rand(1, 3, 2, 2)) == 2 * 3 * 3 * 4


def test_unknown_leaf_with_parameters_rejected():
    net = nn.Sequential(nn.Embedding(10, 4))
    with pytest.raises(ValueError, match="no counting rule for Embedding"):
        count_flops(net, torch.tensor([1, 2]))
    assert _no_hooks_left(net)


def test_runs_in_eval_mode_and_restores_modes():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout()).train()
    net[2].eval()  # a mixed state must come back as it was
    seen = []
    net[1].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    stats = net[1].running_mean.clone(), net[1].running_var.clone()
    count_flops(net, torch.rand(2, 3, 4, 4) + 1)
    assert seen == [False]
    assert [m.training for m in net.modules()] == [True, True, True, False]
    # The probe input did not leak into the BatchNorm statistics.
    assert torch.equal(net[1].running_mean, stats[0]) and torch.equal(net[1].running_var, stats[1])


@pytest.mark.parametrize("widths,n", [([52, 10, 2], 4096), ([56, 74, 74, 74, 74, 3], 100), ([5, 3], 1)])
def test_mlp_flops_equals_counted_mlp(widths, n):
    layers = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    mlp = nn.Sequential(*layers)
    assert mlp_flops(widths, n) == count_flops(mlp, torch.rand(1, n, widths[0]))


def test_mlp_flops_formula_and_errors():
    assert mlp_flops([56, 74, 3], 10) == 2 * 10 * (56 * 74 + 74 * 3)
    assert mlp_flops([56, 74, 3], 0) == 0
    with pytest.raises(ValueError, match=r"at least \[in, out\], got \[4\]"):
        mlp_flops([4], 3)
    with pytest.raises(ValueError, match="ints >= 1"):
        mlp_flops([4, 0, 2], 3)
    with pytest.raises(ValueError, match="n must be an int >= 0, got -1"):
        mlp_flops([4, 2], -1)


# --- the counting rules reproduce the published numbers -------------------------------------
# The three "original" x4 networks, built with the authors' layer layout (FLOPs depend only on
# that), on the meta device so that a full demo-sized image costs nothing to count.


def _fsrcnn(d=56, s=12, m=4):
    return nn.Sequential(
        nn.Conv2d(3, d, 5, padding=2), nn.PReLU(),
        nn.Conv2d(d, s, 1), nn.PReLU(),
        *[nn.Conv2d(s, s, 3, padding=1) for _ in range(m)], nn.PReLU(),
        nn.Conv2d(s, d, 1), nn.PReLU(),
        nn.ConvTranspose2d(d, 3, 9, stride=4, padding=3, output_padding=1),
    )  # fmt: skip


class _ERB(nn.Module):
    def __init__(self, nf, g):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(nf, nf, 3, 1, 1, groups=g), nn.ReLU(),
            nn.Conv2d(nf, nf, 3, 1, 1, groups=g), nn.ReLU(),
            nn.Conv2d(nf, nf, 1),
        )  # fmt: skip

    def forward(self, x):
        return F.relu(self.body(x) + x)


def _fuse(cin, nf):
    return nn.Sequential(nn.Conv2d(cin, nf, 1, bias=False), nn.BatchNorm2d(nf), nn.ReLU())


class _Cascade(nn.Module):
    """CARN's cascading pattern; in a block the same residual unit runs three times."""

    def __init__(self, nf, units):
        super().__init__()
        self.units = nn.ModuleList(units)  # may hold one module three times
        self.fuse = nn.ModuleList([_fuse(nf * (i + 2), nf) for i in range(3)])

    def forward(self, x):
        c = o = x
        for i in range(3):
            c = torch.cat([c, self.units[i](o)], dim=1)
            o = self.fuse[i](c)
        return o


class _CARN_M(nn.Module):
    def __init__(self, nf=64, g=4):
        super().__init__()
        self.entry = nn.Conv2d(3, nf, 3, 1, 1)
        blocks = []
        for _ in range(3):
            erb = _ERB(nf, g)
            blocks.append(_Cascade(nf, [erb, erb, erb]))
        self.body = _Cascade(nf, blocks)
        up = []
        for _ in range(2):
            up += [nn.Conv2d(nf, 4 * nf, 3, 1, 1, groups=g), nn.ReLU(), nn.PixelShuffle(2)]
        self.up = nn.Sequential(*up)
        self.exit = nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, x):
        return self.exit(self.up(self.body(self.entry(x))))


class _MSRResNet(nn.Module):
    def __init__(self, nf=64, nb=16):
        super().__init__()
        self.first = nn.Conv2d(3, nf, 3, 1, 1)
        self.trunk = nn.ModuleList([nn.Conv2d(nf, nf, 3, 1, 1) for _ in range(2 * nb)])
        self.up1 = nn.Conv2d(nf, 4 * nf, 3, 1, 1)
        self.up2 = nn.Conv2d(nf, 4 * nf, 3, 1, 1)
        self.hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.last = nn.Conv2d(nf, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1)
        self.ps = nn.PixelShuffle(2)

    def forward(self, x):
        f = self.lrelu(self.first(x))
        for a, b in zip(self.trunk[0::2], self.trunk[1::2]):
            f = f + b(F.relu(a(f)))
        f = self.lrelu(self.ps(self.up1(f)))
        f = self.lrelu(self.ps(self.up2(f)))
        return self.last(self.lrelu(self.hr(f))) + F.interpolate(x, scale_factor=4, mode="bilinear")


def _count_on_meta(net, h, w):
    net = net.to("meta").eval()
    return count_flops(net, torch.empty(1, 3, h, w, device="meta"))


def test_carn_demo_figure():
    # demo_log.txt: CARN x4 on the 276x420 LR of the demo image, "130.91G".
    assert round(_count_on_meta(_CARN_M(), 276, 420) / 1e9, 2) == 130.91


def test_paper_flop_ratios():
    # Per LR pixel the three networks cost a fixed amount each, so their per-image FLOPs keep
    # fixed ratios; the paper's Test8K column (x4, GFLOPs per image) fixes them to ~1e-4.
    h, w = 12, 20  # any size: no counting rule depends on borders
    fsrcnn = _count_on_meta(_fsrcnn(), h, w)
    carn = _count_on_meta(_CARN_M(), h, w)
    srresnet = _count_on_meta(_MSRResNet(), h, w)
    assert fsrcnn / carn == pytest.approx(1067.8 / 2638.6, abs=1e-4)
    assert srresnet / carn == pytest.approx(11850.7 / 2638.6, abs=1e-4)
    # Charging the transposed tail by its real MACs instead would make FSRCNN ~9x cheaper.
    assert fsrcnn / carn > 0.4


def test_meta_and_real_tensors_agree():
    net = _fsrcnn(d=8, s=4, m=2).eval()
    x = torch.rand(1, 3, 6, 5)
    assert count_flops(net, x) == _count_on_meta(net, 6, 5)


# --- routing costs ----------------------------------------------------------------------------


def test_branch_pixels_16x16():
    assert branch_pixels_16x16(4) == 64 * 64
    assert branch_pixels_16x16(2.5) == 40 * 40
    assert branch_pixels_16x16(3.03) == 48 * 48  # round(48.48)
    assert branch_pixels_16x16(2.53125) == 40 * 40  # round(40.5): Python rounds half to even
    with pytest.raises(ValueError, match="scale must be a finite number > 0, got 0"):
        branch_pixels_16x16(0)
    with pytest.raises(ValueError, match="makes no HR pixel"):
        branch_pixels_16x16(0.01)


def test_cost_vector_values():
    c = cost_vector(100, [50, 10])
    assert c.dtype == torch.float32 and c.shape == (2,)
    torch.testing.assert_close(c, torch.tensor([150 / 260, 110 / 260]), rtol=0, atol=1e-7)


def test_cost_vector_carn_pcsr_like():
    # CARN-PCSR-sized numbers at x4 (> 2^24, so the float32 steps round): heavy 4x74, light 3x20.
    n = branch_pixels_16x16(4)
    backbone = 250_000_000
    heavy, light = mlp_flops([56, 74, 74, 74, 74, 3], n), mlp_flops([56, 20, 20, 20, 3], n)
    c = cost_vector(backbone, [heavy, light])
    exact = torch.tensor([backbone + heavy, backbone + light], dtype=torch.float64)
    exact = exact / exact.sum()
    torch.testing.assert_close(c.double(), exact, rtol=0, atol=1e-7)
    assert c[0] > c[1]
    assert c.sum().item() == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize(
    "backbone,branches,match",
    [
        (-1, [1, 2], "backbone_flops_16x16 must be an int >= 0, got -1"),
        (1.5, [1, 2], "backbone_flops_16x16 must be an int >= 0, got 1.5"),
        (10, [], "branch_flops_16x16 is empty"),
        (10, [3, -2], r"ints >= 0, got \[3, -2\]"),
        (0, [0, 0], "all costs are 0"),
    ],
)
def test_cost_vector_errors(backbone, branches, match):
    with pytest.raises(ValueError, match=match):
        cost_vector(backbone, branches)
