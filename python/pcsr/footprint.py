"""What a backbone needs around and underneath each LR pixel, read from its traced graph.

Exact tiled inference (:mod:`pcsr.tiling`) and the memory estimates (:mod:`pcsr.memory`)
rest on two properties of the backbone, both computed here from its architecture:

* the **receptive-field radius** ``(ry, rx)``: the feature at LR pixel ``(i, j)`` depends
  on the input only within rows ``i-ry .. i+ry`` and columns ``j-rx .. j+rx``. Every node
  of the traced graph gets the radius of its widest input plus its own (a convolution adds
  ``dilation * (kernel - 1) / 2`` per axis, a pointwise op adds nothing), so the result is
  the longest path through the graph, and a module that runs three times (CARN-M's shared
  residual unit) counts three times;
* the **peak activation bytes per LR pixel**: the graph run in order, each node's output
  alive from its creation to its last reader, in-place ops allocating nothing.

``torch.fx.symbolic_trace`` gives the graph; shapes come from running it on a meta tensor,
so nothing is computed. An operation this file does not know is an error, never a guess:
a wrong radius would make tiles silently inexact.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

__all__ = ["Footprint", "footprint", "receptive_field"]

# Modules that act on each pixel alone (BatchNorm in eval mode: running statistics).
_POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.PReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU,
                      nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Identity, nn.Dropout,
                      nn.BatchNorm2d)
# Of those, the ones that return their input (no new tensor) when built with inplace=True
# or always (Identity, Dropout in eval mode).
_ALIASING_MODULES = (nn.Identity, nn.Dropout)

_POINTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
    torch.add, torch.sub, torch.mul, torch.div, torch.relu, torch.sigmoid, torch.tanh,
    F.relu, F.relu6, F.leaky_relu, F.prelu, F.elu, F.gelu, F.silu, F.hardswish, torch.sigmoid,
}
_POINTWISE_METHODS = {"add", "sub", "mul", "div", "relu", "sigmoid", "tanh", "clamp",
                      "add_", "sub_", "mul_", "div_", "relu_", "sigmoid_", "tanh_", "clamp_",
                      "contiguous", "clone"}


@dataclass(frozen=True)
class Footprint:
    """``radius``: receptive-field radius ``(ry, rx)`` in LR pixels. ``act_bytes``: peak
    bytes of the tensors the backbone allocates (its output included, its input not) per
    LR pixel, at the dtype it was measured for. ``out_channels``: width D of the output."""
    radius: tuple[int, int]
    act_bytes: float
    out_channels: int


def receptive_field(backbone: nn.Module) -> tuple[int, int]:
    """Receptive-field radius ``(ry, rx)`` of a size-preserving backbone, in LR pixels."""
    return footprint(backbone).radius


def footprint(backbone: nn.Module, dtype: torch.dtype = torch.float32) -> Footprint:
    """Radius and peak activation bytes per LR pixel of ``backbone`` (see the module doc)."""
    # A meta copy: shapes without arithmetic, and the caller's module left untouched.
    gm = fx.symbolic_trace(copy.deepcopy(backbone).to(device="meta", dtype=dtype))
    side = 8  # any size works: every layer keeps h x w, so bytes scale with h*w
    x = torch.zeros(1, 3, side, side, device="meta", dtype=dtype)
    ShapeProp(gm).propagate(x)
    nodes = list(gm.graph.nodes)

    radius: dict[fx.Node, tuple[int, int]] = {}
    owner: dict[fx.Node, fx.Node] = {}  # node -> the node whose allocation holds its output
    out_node = None
    for n in nodes:
        if n.op == "placeholder":
            radius[n], owner[n] = (0, 0), n
            continue
        if n.op == "output":
            out_node = n.args[0]
            continue
        if n.op == "get_attr":
            radius[n], owner[n] = (0, 0), n
            continue
        ins = [a for a in n.all_input_nodes]
        base = (max((radius[a][0] for a in ins), default=0), max((radius[a][1] for a in ins), default=0))
        own, aliases = _node_rule(gm, n)
        radius[n] = (base[0] + own[0], base[1] + own[1])
        owner[n] = owner[ins[0]] if aliases else n
    if not isinstance(out_node, fx.Node):
        raise NotImplementedError(f"{type(backbone).__name__}: the backbone must return one tensor")
    out_meta = out_node.meta["tensor_meta"]
    if tuple(out_meta.shape[-2:]) != (side, side):
        raise NotImplementedError(
            f"{type(backbone).__name__}: output is {tuple(out_meta.shape)} for an input of "
            f"{tuple(x.shape)}; tiling needs features at the LR resolution")
    peak = _peak_bytes(gm, nodes, owner, out_node)
    return Footprint(radius[out_node], peak / side ** 2, int(out_meta.shape[1]))


def _node_rule(gm: fx.GraphModule, n: fx.Node) -> tuple[tuple[int, int], bool]:
    """(own radius (ry, rx), whether the output aliases the first input) of one node."""
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        if type(m) is nn.Conv2d:
            return _conv_radius(n.target, m), False
        if isinstance(m, _POINTWISE_MODULES):
            aliases = isinstance(m, _ALIASING_MODULES) or bool(getattr(m, "inplace", False))
            return (0, 0), aliases
        raise NotImplementedError(
            f"module {n.target} ({type(m).__name__}): unknown spatial behaviour; tiling and the "
            "memory estimate support Conv2d with stride 1 and pointwise modules")
    if n.op == "call_function":
        if n.target is torch.cat:
            dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
            if dim not in (0, 1, -3, -4):
                raise NotImplementedError(f"{n.name}: torch.cat along dim {dim} joins spatial axes")
            return (0, 0), False
        if n.target in _POINTWISE_FUNCTIONS:
            return (0, 0), bool(n.kwargs.get("inplace", False))
        raise NotImplementedError(f"{n.name}: function {getattr(n.target, '__name__', n.target)} has "
                                  "unknown spatial behaviour")
    if n.op == "call_method":
        if n.target in _POINTWISE_METHODS:
            return (0, 0), n.target.endswith("_")
        raise NotImplementedError(f"{n.name}: method .{n.target}() has unknown spatial behaviour")
    raise NotImplementedError(f"{n.name}: graph node kind {n.op!r}")


def _conv_radius(name: str, m: nn.Conv2d) -> tuple[int, int]:
    if tuple(m.stride) != (1, 1):
        raise NotImplementedError(f"conv {name}: stride {tuple(m.stride)}; features must stay at LR resolution")
    r = []
    for axis in range(2):
        k, d = m.kernel_size[axis], m.dilation[axis]
        if k % 2 == 0:
            raise NotImplementedError(f"conv {name}: even kernel {tuple(m.kernel_size)} shifts the grid")
        pad = m.padding if isinstance(m.padding, str) else m.padding[axis]
        if pad != "same" and pad != d * (k - 1) // 2:
            raise NotImplementedError(f"conv {name}: padding {m.padding} does not keep the size "
                                      f"(kernel {tuple(m.kernel_size)}, dilation {tuple(m.dilation)})")
        r.append(d * (k - 1) // 2)
    return r[0], r[1]


def _peak_bytes(gm: fx.GraphModule, nodes: list[fx.Node], owner: dict, out_node: fx.Node) -> int:
    """Largest sum of live allocations while running ``nodes`` in order (input excluded)."""
    last_use: dict[fx.Node, int] = {}
    for i, n in enumerate(nodes):
        for a in n.all_input_nodes:
            last_use[owner[a]] = i
    keep = owner[out_node]
    live: dict[fx.Node, int] = {}
    peak = 0
    for i, n in enumerate(nodes):
        if n.op in ("call_module", "call_function", "call_method") and owner[n] is n:
            live[n] = _nbytes(n.meta["tensor_meta"])
            peak = max(peak, sum(live.values()) + _conv_workspace(gm, n))
        for a in [a for a in live if a is not keep and last_use.get(a, -1) <= i]:
            del live[a]
    return peak


def _nbytes(meta, channels: int | None = None) -> int:
    shape = list(meta.shape)
    if channels is not None:
        shape[1] = channels
    n = 1
    for v in shape:
        n *= int(v)
    return n * torch.empty((), dtype=meta.dtype).element_size()


# oneDNN, which runs CPU convolutions, works in channel-blocked layouts (blocks of 8 or
# 16 channels) and reorders into and out of them, so besides its output a convolution
# briefly holds about one more input- or output-sized buffer. Measured on this project's
# CPU machine (VmHWM around one conv; 3..208 channels, 1x1/3x3/5x5, groups 1 and 4, 1 and
# 2 threads): up to 1.2 times max(input, output) with channels rounded up to 16; 1x1
# convs on one thread take nothing extra (they skip oneDNN), on two threads up to 1.06.
_CONV_WORKSPACE = 1.25


def _conv_workspace(gm: fx.GraphModule, n: fx.Node) -> int:
    if n.op != "call_module":
        return 0
    m = gm.get_submodule(n.target)
    if type(m) is not nn.Conv2d:
        return 0
    out = n.meta["tensor_meta"]
    inp = n.all_input_nodes[0].meta["tensor_meta"]
    pad16 = lambda c: -(-int(c) // 16) * 16  # noqa: E731
    return int(_CONV_WORKSPACE * max(_nbytes(inp, pad16(inp.shape[1])), _nbytes(out, pad16(out.shape[1]))))
