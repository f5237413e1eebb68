"""A model's inference for one fixed input size, prepared once: ``model.compile_for(shape)``.

    run = model.compile_for((1, 3, 540, 960), scale=4, precision="bf16")
    sr, classes = run(lr)          # lr: [1, 3, 540, 960] on the model's device

Everything that does not depend on the pixels is done at compile time: the precision is
fixed, the backbone prepared in the device's form (:mod:`pcsr.inference`), the cost vector
and weight lists made, the memory estimate checked. Then

* on CUDA (``graph=True``, the default there) the whole call -- normalise, backbone,
  ``route_upsample``, denormalise -- is run a few times on a side stream (cuDNN
  autotuning with ``cudnn.benchmark``, Triton compilation) and captured in one CUDA graph;
  a call copies ``lr`` into the graph's static input and replays it: no Python, no
  launches, no host synchronisation;
* on the CPU there are no graphs: a call runs the prepared pieces eagerly (the same
  arithmetic as ``model(lr)``, without its per-call checks and set-up). ``graph=True`` on a
  CPU model is refused.

The input's values are not range-checked (that reads data back to the host); its shape,
dtype and device are. Outputs are fresh tensors unless ``copy=False``, which returns the
graph's own output buffers: valid until the next call, and the cheapest way to hand a
frame on to an encoder that copies it anyway.
"""
from __future__ import annotations

from typing import Sequence

import torch

import pcsr_kernels

__all__ = ["CompiledModel"]


def _check_shape(shape) -> tuple[int, int, int, int]:
    try:
        dims = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"compile_for: shape must be [B, 3, h, w], got {shape!r}") from None
    if len(dims) != 4 or dims[1] != 3 or min(dims) < 1:
        raise ValueError(f"compile_for: shape must be [B, 3, h, w] with positive sizes, got {tuple(shape)}")
    return dims


class CompiledModel:
    """``model`` (a :class:`pcsr.PCSR` or :class:`pcsr.model.SRModel`) run on inputs of
    exactly ``shape``. Call it as ``run(lr, copy=True)``: ``(sr, classes)`` for PCSR, ``sr``
    for an original network. See the module docstring.

    Args:
        shape: ``[B, 3, h, w]`` of the LR input.
        scale, out_size, k, adaptive, refine, max_memory: as :meth:`pcsr.PCSR.forward`
            (PCSR only; ``scale`` defaults to the original network's own for SRModel).
        precision: ``None`` (the package setting at compile time) or a name; fixed here.
        backbone_precision: the backbone's alone (default: ``precision``).
        graph: capture a CUDA graph (default: on CUDA yes, on the CPU no).
        warmup: calls before the capture (at least 1: Triton compiles, cuDNN autotunes).
    """

    def __init__(self, model, shape: Sequence[int], *, scale: float | None = None,
                 out_size: Sequence[int] | None = None, k: float = 0.0, adaptive: bool = False,
                 refine: bool = True, precision: str | None = None, backbone_precision: str | None = None,
                 graph: bool | None = None,
                 warmup: int = 2, max_memory: int | None = None):
        from .inference import arithmetic, default_form
        from .model import PCSR, SRModel, _precision, _prepared_copy, output_size

        if not isinstance(model, (PCSR, SRModel)):
            raise TypeError(f"compile_for: expected a PCSR or SRModel, got {type(model).__name__}")
        if model.training:
            raise ValueError("compile_for: the model is in training mode; call model.eval() first")
        self.shape = _check_shape(shape)
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.precision = _precision(precision)
        if graph is None:
            graph = self.device.type == "cuda"
        if graph and self.device.type != "cuda":
            raise ValueError(f"compile_for: graph=True needs a model on a CUDA device; this one is on "
                             f"{self.device} (the CPU has no graphs: graph=False prepares the call without one)")
        if int(warmup) < 1:
            raise ValueError(f"compile_for: warmup must be >= 1, got {warmup}")
        self.graph = bool(graph)
        self.model = model
        self.is_pcsr = isinstance(model, PCSR)
        B, _, h, w = self.shape
        bb_precision = self.precision if backbone_precision is None else _precision(backbone_precision)
        self.form = default_form(self.device.type, bb_precision)
        if self.is_pcsr:
            H, W = output_size(h, w, scale, out_size)
            self.scale = round((H / h + W / w) / 2, 1) if scale is None else float(scale)
            self.out_size = (H, W)
            self.routing = dict(k=float(k), adaptive=bool(adaptive), refine=bool(refine))
            probe = torch.empty(self.shape, device=self.device, dtype=self.dtype)
            model._check_memory(probe, H, W, adaptive, refine, max_memory)
            del probe
            self.backbone = _prepared_copy(model._folded, model.backbone, self.form)
            self.cost = model.cost(self.scale).to(device=self.device, dtype=self.dtype)
            self.cls_params = model.classifier.flat_params()
            self.ups = [q for u in model.upsamplers for q in u.flat_params()]
            self.depths = [len(u.widths) - 1 for u in model.upsamplers]
        else:
            if scale is not None and float(scale) != model.scale or out_size is not None:
                raise ValueError(f"compile_for: an original network upscales by its own x{model.scale}; "
                                 f"got scale={scale}, out_size={out_size}")
            self.scale = model.scale
            self.out_size = (h * model.scale, w * model.scale)
            self.net = _prepared_copy(model._folded, model.net, self.form)
        self.mean = model.rgb_mean.to(device=self.device, dtype=self.dtype)
        self.std = model.rgb_std.to(device=self.device, dtype=self.dtype)
        self._graph = None
        if self.graph:
            self._capture(int(warmup), arithmetic)

    # --- the call, as captured --------------------------------------------------------

    def _body(self, lr: torch.Tensor):
        x = (lr - self.mean) / self.std
        if not self.is_pcsr:
            return self.net(x).mul_(self.std).add_(self.mean)
        feat = self.backbone(x)
        sr, classes = pcsr_kernels.route_upsample(feat, x, self.out_size, self.cls_params, self.ups, self.depths,
                                                  self.cost, self.routing["k"], self.routing["adaptive"],
                                                  self.routing["refine"], self.precision)
        return sr.mul_(self.std).add_(self.mean), classes

    @torch.no_grad()
    def _capture(self, warmup: int, arithmetic) -> None:
        dev = self.device
        self._in = torch.empty(self.shape, device=dev, dtype=self.dtype)
        # any image in [0, 1] will do: no decision made on the host depends on the pixels
        self._in.copy_(torch.rand(self.shape, generator=torch.Generator().manual_seed(0)))
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        graph = torch.cuda.CUDAGraph()
        # static shapes: cuDNN may benchmark its algorithms once, during the warm-up
        with arithmetic(self.form, "cuda", benchmark=True):
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self._body(self._in)
            torch.cuda.current_stream(dev).wait_stream(side)
            try:
                with torch.cuda.graph(graph):
                    self._out = self._body(self._in)
            except Exception as e:  # noqa: BLE001 - say what failed and what to do instead
                from pcsr_kernels import backend

                raise RuntimeError(
                    f"compile_for: capturing the call in a CUDA graph failed on the "
                    f"{backend.resolved_name('cuda')!r} backend ({type(e).__name__}: {e}); the triton backend "
                    "is capturable; graph=False runs the prepared call without a graph") from e
        self._graph = graph

    # --- calls ------------------------------------------------------------------------

    def _check_input(self, lr) -> None:
        if not isinstance(lr, torch.Tensor):
            raise TypeError(f"lr must be a tensor of shape {self.shape}, got {type(lr).__name__}")
        if tuple(lr.shape) != self.shape or lr.device != self.device or not lr.is_floating_point():
            raise ValueError(f"lr must be a float tensor of shape {self.shape} on {self.device} (what compile_for "
                             f"was given), got {lr.dtype} {tuple(lr.shape)} on {lr.device}")

    @torch.no_grad()
    def __call__(self, lr: torch.Tensor, copy: bool = True):
        self._check_input(lr)
        if self._graph is None:
            return self._body(lr.to(self.dtype))
        self._in.copy_(lr)
        self._graph.replay()
        out = self._out
        if not copy:
            return out
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()

    def __repr__(self) -> str:
        what = "PCSR" if self.is_pcsr else type(self.model).__name__
        how = "CUDA graph" if self._graph is not None else "eager, prepared"
        return (f"CompiledModel({what}, shape={self.shape}, out={self.out_size}, precision={self.precision}, "
                f"backbone: {self.form.describe()}, {how})")
