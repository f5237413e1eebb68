"""Backbones with their channel counts padded with zeros to tensor-core-friendly widths.

cuDNN's tensor-core convolutions (TF32, bf16) want channel counts that are multiples of 8
(per group, for a grouped convolution); the authors' PCSR backbones are not:
SRResNet-PCSR has nf = 58, CARN-PCSR nf = 52 in 4 groups of 13, FSRCNN's shrunk width is
s = 12. :func:`pad_channels` widens every internal feature map to the next multiple, the
new channels' weights and biases zero, so that they stay zero through every layer (ReLU,
PReLU and LeakyReLU map 0 to 0, additions and concatenations keep them apart, and the
convolutions that read them give them zero weight). The function of the network does not
change; only the order of the floating-point sums inside each convolution may (a padded
convolution sums more terms, all of them exact zeros), so outputs agree to rounding.

The output keeps the original width ``out_dim``: CARN-M's last fusion convolution is built
with the original width (its input is padded, its output is not); MSRResNet's trunk ends
in a residual addition, so its padded channels (the last ones) are sliced off.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .backbones import CARN, FSRCNN, MSRResNet, fold_batchnorm

__all__ = ["pad_channels", "padded_width", "padding_plan"]


def padded_width(width: int, groups: int, multiple: int) -> int:
    """``width`` channels in ``groups`` groups, each group rounded up to ``multiple``."""
    if width % groups:
        raise ValueError(f"padded_width: width {width} is not divisible by groups {groups}")
    per = width // groups
    return groups * (-(-per // multiple) * multiple)


def _group_map(width: int, groups: int, padded: int) -> list[int]:
    """Where channel ``i`` of an unpadded map sits in the padded one: each group keeps its
    channels first and its zero channels last, so a grouped convolution's groups line up."""
    per, pper = width // groups, padded // groups
    return [(i // per) * pper + i % per for i in range(width)]


def _cat_map(base: list[int], padded: int, parts: int) -> list[int]:
    """The map of ``parts`` concatenated feature maps (CARN's cascades)."""
    return [p * padded + j for p in range(parts) for j in base]


@torch.no_grad()
def _embed(dst: nn.Conv2d, src: nn.Conv2d, out_map: list[int], in_map: list[int]) -> None:
    """``dst``'s weights: ``src``'s at output rows ``out_map`` and input channels
    ``in_map`` (indices into the padded maps), zero elsewhere."""
    g = src.groups
    if dst.groups != g:
        raise ValueError(f"pad_channels: groups differ ({src.groups} vs {dst.groups})")
    co, ci = src.out_channels // g, src.in_channels // g
    dci = dst.in_channels // g
    w = torch.zeros_like(dst.weight)  # [C_out', C_in'/g, k, k]
    rows = torch.tensor(out_map)
    # input channel i of group j sits at in_map[i] in the padded map, i.e. at column
    # in_map[i] - j * dci of that group's weight slice
    for j in range(g):
        cols = torch.tensor([in_map[j * ci + i] - j * dci for i in range(ci)])
        w[rows[j * co:(j + 1) * co][:, None], cols[None, :]] = src.weight[j * co:(j + 1) * co]
    dst.weight.copy_(w)
    if dst.bias is not None:
        dst.bias.zero_()
        if src.bias is not None:
            dst.bias[rows] = src.bias


@torch.no_grad()
def _copy_same(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


def padding_plan(module: nn.Module, multiple: int) -> dict | None:
    """The widths :func:`pad_channels` would use (``{'nf': (52, 64)}``...), or ``None``
    when the module is already aligned (or is not one of the three families, or carries
    an upsampling tail whose widths would have to change too)."""
    if isinstance(module, CARN):
        nf = module.out_dim
        g = module.b1.b1.body[0].groups
        p = padded_width(nf, g, multiple)
        if p == nf or not module.no_upsampling:
            return None
        return {"nf": (nf, p), "groups": g}
    if isinstance(module, MSRResNet):
        nf = module.out_dim
        p = padded_width(nf, 1, multiple)
        if p == nf or not module.no_upsampling:
            return None
        return {"nf": (nf, p)}
    if isinstance(module, FSRCNN):
        d, s = module.d, module.s
        pd, ps = padded_width(d, 1, multiple), padded_width(s, 1, multiple)
        # d is the output width (and the deconvolution's input): it is never padded; the
        # authors' d = 48 and 56 are multiples of 8 already.
        if ps == s:
            return None
        return {"s": (s, ps), "d": (d, d), "aligned_d": pd == d}
    return None


def pad_channels(module: nn.Module, multiple: int = 8) -> nn.Module:
    """An eval-mode copy of ``module`` (a CARN, MSRResNet or FSRCNN, BatchNorm folded or
    not) with its internal widths zero-padded to multiples of ``multiple`` (per group).

    The copy has BatchNorm folded (padding works on the folded convolutions) and the same
    ``out_dim`` and output as the original, to rounding. A module that needs no padding,
    or that cannot be padded without changing its tail, comes back folded and unpadded.
    """
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"pad_channels: multiple must be an int >= 1, got {multiple!r}")
    src = fold_batchnorm(module)
    plan = padding_plan(module, multiple)
    if plan is None:
        return src
    if isinstance(module, CARN):
        return _pad_carn(src, plan)
    if isinstance(module, MSRResNet):
        return _pad_msrresnet(src, plan)
    return _pad_fsrcnn(src, plan)


def _convs(m: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: c for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}


def _pad_carn(src: CARN, plan: dict) -> nn.Module:
    (nf, p), g = plan["nf"], plan["groups"]
    dst = fold_batchnorm(CARN(nf=p, group=g, no_upsampling=True)).to(
        device=src.entry.weight.device, dtype=src.entry.weight.dtype)
    # The last global fusion conv writes the output: build it at the original width, so
    # no channel has to be gathered afterwards.
    last = dst.c3[0]
    dst.c3[0] = nn.Conv2d(last.in_channels, nf, 1, 1, 0, bias=True, device=last.weight.device,
                          dtype=last.weight.dtype)
    dst.out_dim = nf
    phi = _group_map(nf, g, p)
    ident3 = [0, 1, 2]
    d, s = _convs(dst), _convs(src)
    if set(d) != set(s):
        raise RuntimeError(f"pad_channels: CARN layouts differ: {sorted(set(d) ^ set(s))}")
    for name, sc in s.items():
        parts = {"c1.0": 2, "c2.0": 3, "c3.0": 4}.get(name.split(".", 1)[-1] if name.count(".") > 1 else name)
        if name == "entry":
            _embed(d[name], sc, phi, ident3)
        elif parts is not None:
            out_map = list(range(nf)) if name == "c3.0" else phi
            _embed(d[name], sc, out_map, _cat_map(phi, p, parts))
        else:  # the residual unit's convolutions: nf -> nf
            _embed(d[name], sc, phi, phi)
    return dst.eval()


class _Narrow(nn.Module):
    """The first ``width`` channels of the wrapped module's output."""

    def __init__(self, body: nn.Module, width: int):
        super().__init__()
        self.body = body
        self.width = width
        self.out_dim = width
        self.no_upsampling = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[:, :self.width]  # [B, width, h, w], a view


def _pad_msrresnet(src: MSRResNet, plan: dict) -> nn.Module:
    nf, p = plan["nf"]
    ref = src.conv_first.weight
    dst = MSRResNet(nf=p, nb=len(src.recon_trunk), no_upsampling=True).to(device=ref.device, dtype=ref.dtype)
    phi = list(range(nf))  # one group: the zero channels go last
    for name, sc in _convs(src).items():
        _embed(_convs(dst)[name], sc, phi, [0, 1, 2] if name == "conv_first" else phi)
    return _Narrow(dst.eval(), nf).eval()


def _pad_fsrcnn(src: FSRCNN, plan: dict) -> nn.Module:
    s, ps = plan["s"]
    d = src.d
    ref = src.head_conv[0].weight
    dst = FSRCNN(d=d, s=ps, m=src.m, scale=src.scale, no_upsampling=src.no_upsampling).to(
        device=ref.device, dtype=ref.dtype)
    phi, ident_d = list(range(s)), list(range(d))
    m = src.m
    sc, dc = _convs(src), _convs(dst)
    for name, conv in sc.items():
        if name == "body_conv.0.0":  # shrink d -> s
            _embed(dc[name], conv, phi, ident_d)
        elif name == f"body_conv.{m + 2}.0":  # expand s -> d
            _embed(dc[name], conv, ident_d, phi)
        elif name.startswith("body_conv."):  # mapping s -> s
            _embed(dc[name], conv, phi, phi)
        else:  # head (3 -> d): unchanged
            _copy_same(dc[name], conv)
    # PReLU slopes (one shared parameter each) and the deconvolution tail are unchanged
    for (n1, m1), (n2, m2) in zip(src.named_modules(), dst.named_modules()):
        if isinstance(m1, nn.PReLU):
            _copy_same(m2, m1)
    if not src.no_upsampling:
        _copy_same(dst.tail_conv, src.tail_conv)
    return dst.eval()
