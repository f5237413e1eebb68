"""CNN backbones used by PCSR and by the "original" models it is compared with.

Three families, each usable two ways:

* ``no_upsampling=True``: the module maps an LR image ``[B, 3, h, w]`` to LR features
  ``[B, out_dim, h, w]``; this is the PCSR encoder.
* ``no_upsampling=False``: the module carries its own tail and maps ``[B, 3, h, w]`` to an
  SR image ``[B, 3, s*h, s*w]``; this is the original network of the paper's tables.

Parameter and buffer names match the authors' release (GitHub 3587jjh/PCSR) so their
checkpoints load with ``load_state_dict(strict=True)``; for a PCSR checkpoint, take the
``encoder.`` sub-dict and strip the prefix.  That constraint is why the attribute names and
``nn.Sequential`` layouts below look the way they do: the index of a layer inside a
``Sequential`` is part of its key.

Input normalisation is *not* done inside any of these modules (the authors' modules do not
do it either: their CARN has the mean-shift lines commented out).  The caller subtracts the
RGB mean from the LR image and adds it back to the output; the authors use mean
``(0.4488, 0.4371, 0.4040)`` for CARN and CARN-PCSR, zero for FSRCNN and SRResNet, std 1
everywhere (``RGB_MEAN`` below).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "FSRCNN",
    "CARN",
    "MSRResNet",
    "RGB_MEAN",
    "make_backbone",
    "fold_batchnorm",
]

# Per-backbone RGB mean the authors subtract from the LR input (std is 1 for all of them).
RGB_MEAN = {
    "fsrcnn": (0.0, 0.0, 0.0),
    "carn": (0.4488, 0.4371, 0.4040),
    "srresnet": (0.0, 0.0, 0.0),
}


def _scaled_kaiming_(modules, scale: float) -> None:
    """Kaiming-normal (fan_in) weights times ``scale`` and zero bias, for every Conv2d.

    The authors initialise FSRCNN and MSRResNet this way (scale 0.1, the usual trick to
    keep deep residual stacks near identity at the start); ConvTranspose2d is not a
    Conv2d subclass, so FSRCNN's deconvolution keeps PyTorch's default init, as theirs.
    """
    for root in modules:
        for m in root.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                with torch.no_grad():
                    m.weight.mul_(scale)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------
# FSRCNN
# --------------------------------------------------------------------------------------


def _fsrcnn_deconv_geometry(scale: int) -> tuple[int, int]:
    """(padding, output_padding) of the 9x9 stride-``scale`` deconvolution.

    A transposed conv puts LR pixel i's kernel centre at HR index ``scale*i - p + 4``; the
    pixel-centre convention wants ``scale*i + (scale-1)/2``, so ``p = (9 - scale)/2``,
    rounded up, and the output padding makes the size exactly ``scale*h``.  At x4 this is
    (3, 1), the authors' values (they hard-code (3, 1) for every scale, which gives
    ``2h+2`` rows at x2 and ``3h+1`` at x3).
    """
    padding = (10 - scale) // 2
    output_padding = 2 * padding - 9 + scale
    return padding, output_padding


class FSRCNN(nn.Module):
    """FSRCNN (Dong et al. 2016) in the authors' layout.

    feature extraction 5x5 conv (3 -> d) + PReLU; shrinking 1x1 (d -> s) + PReLU;
    ``m`` mapping 3x3 convs (s -> s) with a single PReLU after the last one (the authors
    put no activation between the mapping convs); expanding 1x1 (s -> d) + PReLU; then,
    unless ``no_upsampling``, a 9x9 transposed conv (d -> 3, stride ``scale``).
    Every PReLU has one shared slope parameter.

    ``out_dim`` is the feature width ``d`` (what PCSR's MLPs read), in both modes.
    """

    def __init__(self, d: int = 56, s: int = 12, m: int = 4, scale: int = 4,
                 no_upsampling: bool = False):
        super().__init__()
        if not no_upsampling and not 2 <= scale <= 10:
            raise ValueError(f"FSRCNN: scale must be an integer in [2, 10], got {scale}")
        self.d, self.s, self.m = d, s, m
        self.scale = scale
        self.out_dim = d
        self.no_upsampling = no_upsampling

        self.head_conv = nn.Sequential(nn.Conv2d(3, d, 5, 1, 2), nn.PReLU())
        # body_conv indices: 0 shrink, 1..m mapping convs, m+1 PReLU, m+2 expand.
        body = [nn.Sequential(nn.Conv2d(d, s, 1, 1, 0), nn.PReLU())]
        body += [nn.Conv2d(s, s, 3, 1, 1) for _ in range(m)]
        body.append(nn.PReLU())
        body.append(nn.Sequential(nn.Conv2d(s, d, 1, 1, 0), nn.PReLU()))
        self.body_conv = nn.Sequential(*body)

        if not no_upsampling:
            padding, output_padding = _fsrcnn_deconv_geometry(scale)
            self.tail_conv = nn.ConvTranspose2d(d, 3, 9, stride=scale, padding=padding,
                                                output_padding=output_padding)
        _scaled_kaiming_([self.head_conv, self.body_conv], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.body_conv(self.head_conv(x))  # [B, d, h, w]
        if self.no_upsampling:
            return fea
        return self.tail_conv(fea)  # [B, 3, s*h, s*w]


# --------------------------------------------------------------------------------------
# CARN-M
# --------------------------------------------------------------------------------------


class _ConvBNReLU(nn.Sequential):
    """1x1 conv (no bias) -> BatchNorm -> ReLU; keys ``0.*`` (conv) and ``1.*`` (BN)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _EResidualBlock(nn.Module):
    """CARN-M's efficient residual block: relu(x + conv1x1(relu(gconv3x3(relu(gconv3x3(x)))))).

    The two 3x3 convs are grouped (``group`` groups); the 1x1 conv mixes the groups.
    """

    def __init__(self, nf: int, group: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(nf, nf, 3, 1, 1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(nf, nf, 3, 1, 1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(nf, nf, 1, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


class _CascadeBlock(nn.Module):
    """A local cascading block of CARN-M.

    CARN-M shares the weights of the residual unit inside a block: the single ``b1`` is
    applied three times, and the outputs are cascaded through 1x1 conv+BN+ReLU fusions
    ``c1`` (2nf -> nf), ``c2`` (3nf -> nf), ``c3`` (4nf -> nf).
    """

    def __init__(self, nf: int, group: int):
        super().__init__()
        self.b1 = _EResidualBlock(nf, group)
        self.c1 = _ConvBNReLU(2 * nf, nf)
        self.c2 = _ConvBNReLU(3 * nf, nf)
        self.c3 = _ConvBNReLU(4 * nf, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cascade(x, (self.b1, self.b1, self.b1), (self.c1, self.c2, self.c3))


def _cascade(x, units, fusers):
    """CARN's cascading: concat every previous output, fuse back to nf channels."""
    cat = x  # [B, nf*(i+1), h, w] after step i
    out = x
    for unit, fuse in zip(units, fusers):
        cat = torch.cat([cat, unit(out)], dim=1)
        out = fuse(cat)
    return out


class _CARNUpsampler(nn.Module):
    """Grouped sub-pixel upsampler: per factor-2 step (or one factor-3 step),
    grouped 3x3 conv nf -> r^2*nf, ReLU, PixelShuffle(r).  Keys ``up.body.{0,3,...}``."""

    def __init__(self, nf: int, scale: int, group: int):
        super().__init__()
        if scale in (2, 4, 8):
            steps = [2] * int(math.log2(scale))
        elif scale == 3:
            steps = [3]
        else:
            raise ValueError(f"CARN: scale must be 2, 3, 4 or 8, got {scale}")
        layers = []
        for r in steps:
            layers += [nn.Conv2d(nf, r * r * nf, 3, 1, 1, groups=group), nn.ReLU(inplace=True),
                       nn.PixelShuffle(r)]
        self.up = nn.Module()
        self.up.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up.body(x)


class CARN(nn.Module):
    """CARN-M (Ahn et al. 2018, the mobile variant) in the authors' layout.

    entry 3x3 conv (3 -> nf); three cascading blocks ``b1..b3`` with global cascading
    fusions ``c1..c3`` (1x1 conv + BatchNorm + ReLU); unless ``no_upsampling``, a grouped
    sub-pixel upsampler and a 3x3 exit conv (nf -> 3).  ``out_dim = nf``.

    The network expects the mean-subtracted LR image (see ``RGB_MEAN``); it does not
    subtract the mean itself.
    """

    def __init__(self, nf: int = 64, scale: int = 4, group: int = 4,
                 no_upsampling: bool = False):
        super().__init__()
        if nf % group != 0:
            raise ValueError(f"CARN: nf ({nf}) must be divisible by group ({group})")
        self.scale = scale
        self.out_dim = nf
        self.no_upsampling = no_upsampling

        self.entry = nn.Conv2d(3, nf, 3, 1, 1)
        self.b1 = _CascadeBlock(nf, group)
        self.b2 = _CascadeBlock(nf, group)
        self.b3 = _CascadeBlock(nf, group)
        self.c1 = _ConvBNReLU(2 * nf, nf)
        self.c2 = _ConvBNReLU(3 * nf, nf)
        self.c3 = _ConvBNReLU(4 * nf, nf)
        if not no_upsampling:
            self.upsample = _CARNUpsampler(nf, scale, group)
            self.exit = nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = _cascade(self.entry(x), (self.b1, self.b2, self.b3),
                       (self.c1, self.c2, self.c3))  # [B, nf, h, w]
        if self.no_upsampling:
            return fea
        return self.exit(self.upsample(fea))  # [B, 3, s*h, s*w]


# --------------------------------------------------------------------------------------
# MSRResNet
# --------------------------------------------------------------------------------------


class _ResidualBlockNoBN(nn.Module):
    """x + conv3x3(relu(conv3x3(x))), no BatchNorm."""

    def __init__(self, nf: int):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """Modified SRResNet (BasicSR's MSRResNet) in the authors' layout.

    ``conv_first`` 3x3 (3 -> nf) + LeakyReLU(0.1); ``nb`` residual blocks without BN
    (``recon_trunk``); unless ``no_upsampling``: sub-pixel upsampling (x4: two
    conv nf -> 4nf + PixelShuffle(2) + LeakyReLU; x2/x3: one with r^2*nf), ``HRconv`` 3x3 +
    LeakyReLU, ``conv_last`` 3x3 (nf -> 3), plus a bilinear upsample of the *input*
    (global residual).  With ``no_upsampling`` the output is the trunk's output (no skip
    from ``conv_first``), ``out_dim = nf``.
    """

    def __init__(self, nf: int = 64, nb: int = 16, scale: int = 4,
                 no_upsampling: bool = False):
        super().__init__()
        if not no_upsampling and scale not in (2, 3, 4):
            raise ValueError(f"MSRResNet: scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self.out_dim = nf
        self.no_upsampling = no_upsampling

        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.recon_trunk = nn.Sequential(*[_ResidualBlockNoBN(nf) for _ in range(nb)])
        if not no_upsampling:
            r = 3 if scale == 3 else 2
            self.upconv1 = nn.Conv2d(nf, r * r * nf, 3, 1, 1)
            if scale == 4:
                self.upconv2 = nn.Conv2d(nf, 4 * nf, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(r)
            self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        _scaled_kaiming_([self], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.recon_trunk(self.lrelu(self.conv_first(x)))  # [B, nf, h, w]
        if self.no_upsampling:
            return out
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.scale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.HRconv(out)))  # [B, 3, s*h, s*w]
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + base


# --------------------------------------------------------------------------------------
# factory and inference helpers
# --------------------------------------------------------------------------------------

_BACKBONES = {"fsrcnn": FSRCNN, "carn": CARN, "srresnet": MSRResNet}


def make_backbone(name: str, **kwargs) -> nn.Module:
    """Build a backbone by the authors' registry name: 'fsrcnn', 'carn' or 'srresnet'.

    Keyword arguments go to the constructor.  The authors' spelling ``upscale`` (their
    FSRCNN and MSRResNet) is accepted for ``scale``, so a checkpoint's
    ``ck['model']['args']`` (or ``['encoder_spec']['args']``) can be passed as is.
    """
    key = name.lower()
    if key not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(_BACKBONES)}")
    kwargs = dict(kwargs)
    if "upscale" in kwargs:
        if "scale" in kwargs and kwargs["scale"] != kwargs["upscale"]:
            raise ValueError(f"make_backbone: scale={kwargs['scale']} and "
                             f"upscale={kwargs['upscale']} disagree")
        kwargs["scale"] = kwargs.pop("upscale")
    return _BACKBONES[key](**kwargs)


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Conv2d equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics).

    ``y = g * (W x + b - mu) / sqrt(var + eps) + beta`` so ``W' = W * g / sqrt(var + eps)``
    per output channel and ``b' = (b - mu) * g / sqrt(var + eps) + beta``.  Computed in
    float64 so the folded weights round once, not twice.
    """
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                      stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                      groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    w = conv.weight.detach().double()
    b = (conv.bias.detach().double() if conv.bias is not None
         else torch.zeros(conv.out_channels, dtype=torch.float64, device=w.device))
    gamma = (bn.weight.detach().double() if bn.affine
             else torch.ones_like(b))
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(b)
    inv_std = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    g = gamma * inv_std  # [C_out]
    with torch.no_grad():
        fused.weight.copy_(w * g.view(-1, 1, 1, 1))
        fused.bias.copy_((b - bn.running_mean.detach().double()) * g + beta)
    return fused


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``module`` with every BatchNorm2d folded into its conv.

    A BatchNorm2d is folded when it directly follows a Conv2d inside the same
    ``nn.Sequential`` (the only place where "follows" is defined by the module tree; it is
    where all of CARN's BatchNorms live).  The conv is replaced by one with bias and the
    BatchNorm by ``nn.Identity``, so the copy's state-dict keys differ from the original's:
    use it for inference only.  The input module is left untouched.
    """
    out = copy.deepcopy(module).eval()
    for parent in out.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules.keys())
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d)
                    and bn.track_running_stats and bn.running_mean is not None):
                parent._modules[a] = _fold_conv_bn(conv, bn)
                parent._modules[b] = nn.Identity()
    return out
