"""The PCSR model: a CNN backbone, a per-pixel classifier and M MLP upsamplers.

Inference goes through ``torch.ops.pcsr.route_upsample`` (via :mod:`pcsr_kernels`), so the
backend (reference, cpu, triton, cuda) is a flag, not a code change. Training uses the
soft mixture ``sum_j p_j * U_j + bilinear(lr)`` in plain PyTorch (autograd).

Branch 0 is the heaviest upsampler; branches ``j < (M+1)//2`` are "heavy".
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import pcsr_kernels

from . import flops as _flops
from . import memory as _memory
from .backbones import fold_batchnorm, make_backbone
from .inference import PreparedBackbone, default_form, prepare_backbone


class MLP(nn.Module):
    """``Linear -> ReLU`` per hidden layer, then a final ``Linear``.

    The layers sit in ``self.layers`` (an ``nn.Sequential``: Linear at even indices) so the
    authors' ``imnet.layers.<i>`` keys map one to one.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for h in hidden:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)
        self.widths = [in_dim, *hidden, out_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def flat_params(self) -> list[torch.Tensor]:
        """``[W0, b0, W1, b1, ...]`` in nn.Linear layout, as the pcsr ops take them."""
        out = []
        for m in self.layers:
            if isinstance(m, nn.Linear):
                out += [m.weight, m.bias]
        return out


def _check_image(name: str, x: torch.Tensor, values: bool = True) -> torch.Tensor:
    """The model's input, validated: ``[B, 3, h, w]`` float in [0, 1]. fp16 / bf16 come back
    as float32 (the weights' precision); anything that is not an image in [0, 1] is refused.
    ``values=False`` checks only the shape and dtype: the range check reads the data back to
    the host, which a compiled graph cannot do."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be an RGB batch [B, 3, h, w], got {shape}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        hint = " (0-255 pixels: pass lr.float() / 255)" if x.dtype == torch.uint8 else ""
        raise ValueError(f"{name} must be a float image in [0, 1], got dtype {x.dtype}{hint}")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if not values:
        return x
    lo, hi = torch.aminmax(x)
    lo, hi = float(lo), float(hi)
    # A bicubic-downscaled image overshoots [0, 1] a little; 0-255 data reaches far beyond 2
    # unless it is black (any pixel above 2/255 of full scale gives it away).
    if not (-1.0 <= lo and hi <= 2.0):
        what = "NaN" if lo != lo or hi != hi else f"values in [{lo:g}, {hi:g}]"
        hint = " (0-255 pixels? divide by 255)" if hi > 2.0 and hi == hi and hi <= 65535 else ""
        raise ValueError(f"{name} must be a float image in [0, 1], got {what}{hint}; shape {tuple(x.shape)}")
    return x


def output_size(h: int, w: int, scale: float | None, out_size: Sequence[int] | None) -> tuple[int, int]:
    """HR size for an LR size: ``round(h * scale)`` per side (as the authors), or out_size."""
    if (scale is None) == (out_size is None):
        raise ValueError("give exactly one of scale and out_size")
    if out_size is not None:
        H, W = (int(v) for v in out_size)
        if H <= 0 or W <= 0:
            raise ValueError(f"out_size must be positive, got {tuple(out_size)}")
        return H, W
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return max(1, round(h * scale)), max(1, round(w * scale))


class PCSR(nn.Module):
    """PCSR with any number of branches ``M = len(upsamplers) >= 2``.

    Args:
        backbone: 'fsrcnn' | 'carn' | 'srresnet'; ``backbone_args`` go to its constructor
            (``no_upsampling`` is forced on).
        upsamplers: hidden widths per branch, heaviest first, e.g. ``[[74]*4, [20]*3]``.
        classifier: hidden widths of the classifier MLP (``[]``: one Linear).
        rgb_mean, rgb_std: the normalisation applied to the LR input (undone on the output).
    """

    def __init__(self, backbone: str, backbone_args: dict | None, upsamplers: Sequence[Sequence[int]],
                 classifier: Sequence[int], rgb_mean=(0.0, 0.0, 0.0), rgb_std=(1.0, 1.0, 1.0)):
        super().__init__()
        if len(upsamplers) < 2:
            raise ValueError(f"PCSR needs at least 2 upsamplers (M >= 2), got {len(upsamplers)}")
        args = dict(backbone_args or {})
        args["no_upsampling"] = True
        self.config = {
            "backbone": backbone, "backbone_args": {k: v for k, v in args.items() if k != "no_upsampling"},
            "upsamplers": [list(map(int, u)) for u in upsamplers], "classifier": list(map(int, classifier)),
            "rgb_mean": [float(v) for v in rgb_mean], "rgb_std": [float(v) for v in rgb_std],
        }
        self.backbone = make_backbone(backbone, **args)
        D = self.backbone.out_dim
        self.classifier = MLP(D + 4, len(upsamplers), classifier)
        self.upsamplers = nn.ModuleList(MLP(D + 4, 3, u) for u in upsamplers)
        self.register_buffer("rgb_mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(rgb_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._cost_cache: dict[float, torch.Tensor] = {}
        # FLOPs of the backbone on a 16x16 LR input (the cost vector's backbone term): they
        # depend on the architecture only, and knowing them here keeps cost() traceable by
        # torch.compile (counting runs hooks, which a compiled graph cannot).
        self._backbone_flops_16 = _meta_flops(self.backbone, (1, 3, 16, 16))
        # A plain dict, not an attribute, so the folded copy is not registered as a submodule.
        self._folded: dict[str, nn.Module] = {}

    # --- structure -----------------------------------------------------------------

    @property
    def num_branches(self) -> int:
        return len(self.upsamplers)

    @property
    def num_heavy(self) -> int:
        return (self.num_branches + 1) // 2

    def train(self, mode: bool = True):
        self._folded.clear()  # weights may change: drop the inference copy
        return super().train(mode)

    def _inference_backbone(self) -> nn.Module:
        """Eval backbone with BatchNorm folded into the convolutions (same function, fewer ops):
        the plain form, NCHW and unpadded, that the memory model and tiling analyse."""
        if self.training:
            return self.backbone
        return _folded_copy(self._folded, self.backbone)

    def _runtime_backbone(self, device_type: str, precision: str | None = None) -> nn.Module:
        """The backbone as :meth:`forward` runs it on ``device_type`` at ``precision`` (``None``:
        the package setting): :func:`pcsr.inference.default_form` (channels_last, channels
        padded on CUDA, the precision's arithmetic), rebuilt when the weights change."""
        if self.training:
            return self.backbone
        return _prepared_copy(self._folded, self.backbone, default_form(device_type, _precision(precision)))

    def load_state_dict(self, *args, **kwargs):
        self._folded.clear()
        self._cost_cache.clear()
        return super().load_state_dict(*args, **kwargs)

    def cost(self, scale: float) -> torch.Tensor:
        """Relative cost of each branch at ``scale`` (the authors' cost_list, branch 0 first):
        FLOPs of the backbone on a 16x16 LR input plus FLOPs of branch j on the HR pixels it
        makes, normalised to sum 1."""
        key = float(scale)
        if torch.compiler.is_compiling():  # a few float32 ops on constants, traced into the graph
            return self._cost_vector(key)
        if key not in self._cost_cache:
            self._cost_cache[key] = self._cost_vector(key)
        return self._cost_cache[key]

    def _cost_vector(self, scale: float) -> torch.Tensor:
        n = _flops.branch_pixels_16x16(scale)
        branches = [_flops.mlp_flops(u.widths, n) for u in self.upsamplers]
        return _flops.cost_vector(self._backbone_flops_16, branches)

    # --- inference -------------------------------------------------------------------

    def normalise(self, lr: torch.Tensor) -> torch.Tensor:
        return (lr - self.rgb_mean.to(lr)) / self.rgb_std.to(lr)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.rgb_std.to(x) + self.rgb_mean.to(x)

    @torch.no_grad()
    def forward(self, lr: torch.Tensor, scale: float | None = None, out_size: Sequence[int] | None = None,
                k: float = 0.0, adaptive: bool = False, refine: bool = True,
                max_memory: int | None = None, precision: str | None = None,
                backbone_precision: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Upscale a batch of LR images in [0, 1]: ``(sr [B,3,H,W], classes [B,H,W])``.

        ``sr`` is not clamped (the paper's protocol measures the unclamped output).
        ``scale`` sets the cost vector too; with only ``out_size`` the scale is taken as the
        mean of the two ratios rounded to 0.1, as the authors do.

        The whole batch runs at once. Before anything is allocated its peak memory is
        estimated (:func:`pcsr.memory.forward_estimate`) and a
        :class:`pcsr.memory.TooLargeError` naming the bytes is raised when it exceeds
        ``max_memory`` (default: the memory available now on the input's device); large
        images go through :func:`pcsr.tiling.upscale`, which tiles them exactly.

        ``precision`` (``None``: :func:`pcsr_kernels.get_precision`) is the arithmetic of the
        backbone and the upsampler MLPs (:mod:`pcsr.inference` says what each mode means for
        the backbone; the classifier is always fp32). The backbone runs in the device's
        fastest form that computes the same function (:meth:`_runtime_backbone`);
        ``backbone_precision`` sets the backbone's arithmetic alone (default: ``precision``),
        e.g. to measure the kernels' modes with an fp32 backbone.

        Under ``torch.compile`` (``fullgraph=True`` works) the input's values are not
        range-checked and no memory estimate is made (both read data back to the host),
        and the backbone is traced as it is (BatchNorm in eval mode) for the compiler to
        fuse. For a fixed input size, :meth:`compile_for` prepares (and on CUDA captures
        in a CUDA graph) the whole call once.
        """
        compiling = torch.compiler.is_compiling()
        lr = _check_image("lr", lr, values=not compiling)
        h, w = lr.shape[-2:]
        H, W = output_size(h, w, scale, out_size)
        if scale is None:
            scale = round((H / h + W / w) / 2, 1)
        if not compiling:
            precision = _precision(precision)
            self._check_memory(lr, H, W, adaptive, refine, max_memory)
        x = self.normalise(lr)
        if compiling:
            feat = self.backbone(x)
        else:
            bb_precision = precision if backbone_precision is None else _precision(backbone_precision)
            feat = self._runtime_backbone(x.device.type, bb_precision)(x)
        cost = self.cost(scale).to(device=feat.device, dtype=feat.dtype)
        ups = [p for u in self.upsamplers for p in u.flat_params()]
        depths = [len(u.widths) - 1 for u in self.upsamplers]
        sr, classes = pcsr_kernels.route_upsample(feat, x, (H, W), self.classifier.flat_params(), ups,
                                                  depths, cost, k, adaptive, refine, precision)
        del feat, x
        # In place: the op's output is ours, and a second HR-sized copy is what the memory
        # estimate leaves out. Same two roundings as denormalise().
        return sr.mul_(self.rgb_std.to(sr)).add_(self.rgb_mean.to(sr)), classes

    def compile_for(self, shape: Sequence[int], **kwargs):
        """This model's inference for inputs of exactly ``shape`` ``[B, 3, h, w]``, prepared
        once and, on CUDA, captured in a CUDA graph: a callable ``run(lr) -> (sr, classes)``.
        Keyword arguments: ``scale`` / ``out_size``, ``k``, ``adaptive``, ``refine``,
        ``precision``, ``graph``, ``warmup``, ``max_memory``
        (:class:`pcsr.compiled.CompiledModel`)."""
        from .compiled import CompiledModel

        return CompiledModel(self, shape, **kwargs)

    def _check_memory(self, lr: torch.Tensor, H: int, W: int, adaptive: bool, refine: bool,
                      max_memory: int | None) -> None:
        if lr.device.type not in ("cpu", "cuda"):
            return
        est = _memory.forward_estimate(self, lr.shape, H, W, next(self.parameters()).dtype, lr.device,
                                       adaptive, refine)
        budget = _memory.available_memory(lr.device) if max_memory is None else int(max_memory)
        B, _, h, w = lr.shape
        _memory.check_fits(f"upscaling {B}x3x{h}x{w} -> {H}x{W} as a whole image", est, budget,
                           "pcsr.tiling.upscale (or `pcsr upscale`, which uses it) runs it in tiles")

    @torch.no_grad()
    def forward_tiled(self, lr: torch.Tensor, scale: float, k: float = 0.0, adaptive: bool = False,
                      refine: bool = True, tile: int | None = None, max_memory: int | None = None,
                      progress=None, **_legacy) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`pcsr.tiling.upscale` with the old calling convention: ``progress(n)`` gets
        the number of tiles just finished, and ``classes`` are int64 as :meth:`forward`
        returns them. The result equals the whole image's to float rounding.

        ``tile`` is the LR side each tile owns (``None``: chosen from ``max_memory``); the
        old ``stride`` and ``batch`` arguments are accepted and ignored (tiles no longer
        overlap: each halo is the backbone's receptive field).
        """
        from . import tiling

        report = None if progress is None else (lambda done, total: progress(1))
        sr, classes = tiling.upscale(self, lr, scale, k=k, adaptive=adaptive, refine=refine,
                                     max_memory=max_memory, tile=tile, progress=report)
        return sr, classes.to(torch.int64)

    # --- training --------------------------------------------------------------------

    def forward_train(self, lr: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training forward on query pixels (LIIF convention).

        lr [B,3,h,w] in [0,1]; coord [B,Q,2] HR pixel centres as (y, x) in (-1, 1); cell
        [B,Q,2] = (2/H, 2/W). Returns ``(pred [B,Q,3] (soft mixture + bilinear, in image
        units), probs [B,Q,M], branch_preds [B,Q,M,3])``.
        """
        x = self.normalise(lr)
        feat = self.backbone(x)
        inp = make_mlp_input(feat, coord, cell)  # [B, Q, D+4]
        probs = torch.softmax(self.classifier(inp), dim=-1)
        preds = torch.stack([u(inp) for u in self.upsamplers], dim=2)  # [B, Q, M, 3]
        base = F.grid_sample(x, coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border",
                             align_corners=False)[:, :, 0, :].permute(0, 2, 1)  # [B, Q, 3]
        pred = (probs.unsqueeze(-1) * preds).sum(2) + base
        return self.denormalise_points(pred), probs, preds

    def denormalise_points(self, pred: torch.Tensor) -> torch.Tensor:
        return pred * self.rgb_std.view(1, 1, 3).to(pred) + self.rgb_mean.view(1, 1, 3).to(pred)

    # --- FLOPs -----------------------------------------------------------------------

    def flops(self, lr_shape: Sequence[int], classes: torch.Tensor) -> int:
        """FLOPs of one inference with the official counting rules: backbone (hooks on the
        unfolded modules), the classifier on every HR pixel, each branch on its pixels."""
        total = _meta_flops(self.backbone, lr_shape)
        total += _flops.mlp_flops(self.classifier.widths, classes.numel())
        counts = torch.bincount(classes.reshape(-1), minlength=self.num_branches).tolist()
        for u, n in zip(self.upsamplers, counts):
            total += _flops.mlp_flops(u.widths, int(n))
        return total


def _meta_flops(module: nn.Module, shape: Sequence[int]) -> int:
    """Official-rule FLOPs of ``module`` on an input of ``shape``, counted on a copy on the
    meta device: same hooks and shapes, no arithmetic, so 8K inputs cost nothing."""
    meta = copy.deepcopy(module).to("meta")
    return _flops.count_flops(meta, torch.zeros(*shape, device="meta"))


def _precision(precision: str | None) -> str:
    """A checked precision name; ``None``: the package setting (``pcsr_kernels``)."""
    from pcsr_kernels import precision as _prec

    return _prec.resolve(precision)


def _weights_key(module: nn.Module) -> tuple:
    tensors = list(module.parameters()) + list(module.buffers())
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def _prepared_copy(cache: dict, module: nn.Module, form) -> PreparedBackbone:
    """``module`` prepared in ``form`` (:func:`pcsr.inference.prepare_backbone`), cached per
    form and rebuilt whenever a parameter or buffer changed (as :func:`_folded_copy`)."""
    key = _weights_key(module)
    forms = cache.setdefault("prepared", {})
    if cache.get("prepared_key") != key:
        forms.clear()
        cache["prepared_key"] = key
    if form not in forms:
        forms[form] = prepare_backbone(module, form)
    return forms[form]


def _folded_copy(cache: dict, module: nn.Module) -> nn.Module:
    """The BatchNorm-folded copy of ``module``, rebuilt whenever a parameter or buffer
    changed (in-place updates bump ``_version``) or moved to another device/dtype.

    The copy runs as its ``torch.fx`` trace: the same modules and functions in the same
    order, but each activation is released right after its last reader, where eager
    ``nn.Sequential`` nesting keeps a block's input alive until the block returns (FSRCNN
    at 1000x1000: 386 MB peak instead of 626 MB). :mod:`pcsr.memory` estimates this peak.
    """
    key = _weights_key(module)
    if cache.get("key") != key:
        folded = fold_batchnorm(module)
        try:
            folded = torch.fx.symbolic_trace(folded)
        except Exception:  # noqa: BLE001 - an untraceable module still runs, eagerly
            pass
        cache["key"], cache["module"] = key, folded
    return cache["module"]


def make_mlp_input(feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """LIIF sampler input for arbitrary query points: ``[z, rel_coord, rel_cell]`` [B,Q,D+4].

    ``z`` is the nearest LR feature (``grid_sample`` nearest), ``rel_coord`` the offset to
    its pixel centre in LR pixel units, ``rel_cell`` the HR cell in LR pixel units.
    """
    h, w = feat.shape[-2:]
    grid = coord.flip(-1).unsqueeze(1)  # [B, 1, Q, 2] as (x, y)
    z = F.grid_sample(feat, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
    from pcsr_kernels.geometry import liif_coord

    lr_coord = torch.stack(torch.meshgrid(liif_coord(h, feat.device), liif_coord(w, feat.device), indexing="ij"))
    q = F.grid_sample(lr_coord.unsqueeze(0).expand(feat.shape[0], 2, h, w).to(feat.dtype), grid,
                      mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
    scale = feat.new_tensor([h, w])
    rel = (coord - q) * scale
    rel_cell = cell * scale
    return torch.cat([z, rel, rel_cell], dim=-1)


class SRModel(nn.Module):
    """An original (non-PCSR) network with its own upsampling tail, with the input
    normalisation its authors used. ``forward(lr) -> sr`` (not clamped)."""

    def __init__(self, backbone: str, backbone_args: dict | None, rgb_mean=(0.0, 0.0, 0.0), rgb_std=(1.0, 1.0, 1.0)):
        super().__init__()
        args = dict(backbone_args or {})
        args["no_upsampling"] = False
        self.config = {"backbone": backbone, "backbone_args": {k: v for k, v in args.items() if k != "no_upsampling"},
                       "rgb_mean": [float(v) for v in rgb_mean], "rgb_std": [float(v) for v in rgb_std]}
        self.net = make_backbone(backbone, **args)
        self.register_buffer("rgb_mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(rgb_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._folded: dict[str, nn.Module] = {}

    @property
    def scale(self) -> int:
        return int(self.net.scale)

    def train(self, mode: bool = True):
        self._folded.clear()
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._folded.clear()
        return super().load_state_dict(*args, **kwargs)

    @torch.no_grad()
    def forward(self, lr: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        """``sr`` of ``lr [B,3,h,w]`` in [0, 1]; ``precision`` as :meth:`PCSR.forward` (the
        network runs in :func:`pcsr.inference.default_form` of the device)."""
        compiling = torch.compiler.is_compiling()
        lr = _check_image("lr", lr, values=not compiling)
        net = self.net
        if not self.training and not compiling:
            net = _prepared_copy(self._folded, self.net, default_form(lr.device.type, _precision(precision)))
        x = (lr - self.rgb_mean.to(lr)) / self.rgb_std.to(lr)
        return net(x) * self.rgb_std.to(lr) + self.rgb_mean.to(lr)

    def normalise(self, lr: torch.Tensor) -> torch.Tensor:
        return (lr - self.rgb_mean.to(lr)) / self.rgb_std.to(lr)

    def compile_for(self, shape: Sequence[int], **kwargs):
        """``sr = run(lr)`` for inputs of exactly ``shape``, prepared once (a CUDA graph on
        CUDA): :class:`pcsr.compiled.CompiledModel` (``precision``, ``graph``, ``warmup``)."""
        from .compiled import CompiledModel

        return CompiledModel(self, shape, **kwargs)

    def flops(self, lr_shape: Sequence[int]) -> int:
        """FLOPs of one forward on an input of ``lr_shape``, official counting rules."""
        return _meta_flops(self.net, lr_shape)
