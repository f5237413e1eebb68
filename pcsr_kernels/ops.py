"""Registration of the ``torch.ops.pcsr`` operators: schemas (when the compiled extension
is absent), the CPU/CUDA implementations that dispatch to the chosen backend, and the
fake (meta) kernels used by ``torch.compile``.

The public Python wrappers (``pcsr_kernels.route_upsample`` ...) call
``torch.ops.pcsr.<op>.default`` and nothing else.
"""
from __future__ import annotations

import torch

from . import backend, memory, reference, validate
from . import precision as precision_mod
from .schemas import SCHEMAS

OPS = tuple(SCHEMAS)
_lib = None


def define_schemas() -> None:
    """Define the schemas from Python when the C++ extension did not."""
    global _lib
    if hasattr(torch.ops.pcsr, "route_upsample"):
        return
    _lib = torch.library.Library("pcsr", "DEF")
    for schema in SCHEMAS.values():
        _lib.define(schema)


# --- implementations: validate, check the memory estimate, hand over to the backend ---
# The shape checks run here (the backends repeat them: microseconds) so that the memory
# estimate reads valid sizes; the guard (see pcsr_kernels.memory) runs before any
# allocation. The fake kernels below do not run it: fake tensors allocate nothing.

def _widths(params) -> list[int]:
    return [int(params[0].shape[1])] + [int(params[i].shape[0]) for i in range(0, len(params), 2)]


def _route_upsample(feat, lr, out_size, classifier, upsamplers, depths, cost, k=0.0, adaptive=False, refine=True,
                    precision=None):
    name = backend.resolved_name(feat.device.type, feat.dtype, "route_upsample")
    # The triton backend on CUDA checks the cost's values on the device: a host check
    # would wait for the GPU on every call and forbid CUDA-graph capture.
    on_device = feat.device.type == "cuda" and name == "triton"
    M, H, W, branches = validate.route_upsample_args(feat, lr, out_size, classifier, upsamplers, depths, cost, k,
                                                     values=not on_device)
    if on_device:
        validate.check_cost_on_device(cost)
    prec = precision_mod.resolve(precision)
    B, D, h, w = feat.shape
    need = memory.route_upsample_bytes(name, B, D, h, w, H, W, [_widths(classifier)] + [_widths(b) for b in branches],
                                       feat.element_size(), bool(adaptive), bool(refine))
    memory.check("route_upsample", f"out_size (H, W) = ({H}, {W}) with B = {B}, M = {M}", need, feat.device)
    return backend.impls(name)["route_upsample"](feat, lr, [int(s) for s in out_size], list(classifier),
                                                 list(upsamplers), list(depths), cost, float(k), bool(adaptive),
                                                 bool(refine), prec)


def _classify(feat, out_size, classifier):
    B, D, h, w = validate.check_feat(feat)
    H, W = validate.check_out_size(out_size)
    widths = validate.check_mlp("classifier", classifier, D + 4, None, feat.dtype, feat.device)
    name = backend.resolved_name(feat.device.type, feat.dtype, "classify")
    need = memory.classify_bytes(name, B, D, h, w, H, W, widths, feat.element_size())
    memory.check("classify", f"out_size (H, W) = ({H}, {W}) with B = {B}, M = {widths[-1]}", need, feat.device)
    return backend.impls(name)["classify"](feat, [int(s) for s in out_size], list(classifier))


def _route(probs, cost, k=0.0, adaptive=False):
    validate.check_tensor("probs", probs, 4)
    name = backend.resolved_name(probs.device.type, probs.dtype, "route")
    B, H, W, M = probs.shape
    need = memory.route_bytes(name, B, H, W, M, probs.element_size(), bool(adaptive), probs.is_contiguous())
    memory.check("route", f"probs of shape {tuple(probs.shape)}", need, probs.device)
    return backend.impls(name)["route"](probs, cost, float(k), bool(adaptive))


def _upsample(feat, lr, classes, upsamplers, depths, precision=None):
    B, D, h, w = validate.check_feat(feat)
    branches = validate.check_branches(upsamplers, depths, feat)
    H, W = validate.check_classes_hw(classes)
    prec = precision_mod.resolve(precision)
    name = backend.resolved_name(feat.device.type, feat.dtype, "upsample")
    need = memory.upsample_bytes(name, B, D, h, w, H, W, [_widths(b) for b in branches], feat.element_size())
    memory.check("upsample", f"classes of shape {tuple(classes.shape)} (an output of [B, 3, {H}, {W}])", need,
                 feat.device)
    return backend.impls(name)["upsample"](feat, lr, classes, list(upsamplers), list(depths), prec)


def _refine(sr, classes, num_branches):
    validate.check_tensor("sr", sr, 4)
    name = backend.resolved_name(sr.device.type, sr.dtype, "refine")
    B, _, H, W = sr.shape
    memory.check("refine", f"sr of shape {tuple(sr.shape)}", memory.refine_bytes(name, B, H, W, sr.element_size()),
                 sr.device)
    return backend.impls(name)["refine"](sr, classes, int(num_branches))


_IMPLS = {"route_upsample": _route_upsample, "classify": _classify, "route": _route,
          "upsample": _upsample, "refine": _refine}


# --- fake kernels: shapes only -------------------------------------------------------

def _route_upsample_fake(feat, lr, out_size, classifier, upsamplers, depths, cost, k=0.0, adaptive=False, refine=True,
                         precision=None):
    precision_mod.resolve(precision)
    _, H, W, _ = validate.route_upsample_args(feat, lr, out_size, classifier, upsamplers, depths, cost, k, values=False)
    B = feat.shape[0]
    return feat.new_empty(B, 3, H, W), feat.new_empty(B, H, W, dtype=torch.int64)


def _classify_fake(feat, out_size, classifier):
    B, D, _, _ = validate.check_feat(feat)
    H, W = validate.check_out_size(out_size)
    widths = validate.check_mlp("classifier", classifier, D + 4, None, feat.dtype, feat.device)
    return feat.new_empty(B, H, W, widths[-1])


def _route_fake(probs, cost, k=0.0, adaptive=False):
    validate.check_tensor("probs", probs, 4)
    validate.check_cost(cost, probs.shape[-1], probs.device, values=False)
    validate.check_k(k)
    return probs.new_empty(probs.shape[:3], dtype=torch.int64)


def _upsample_fake(feat, lr, classes, upsamplers, depths, precision=None):
    precision_mod.resolve(precision)
    B, _, _, _ = validate.check_feat(feat)
    validate.check_lr(lr, feat)
    validate.check_branches(upsamplers, depths, feat)
    validate.check_tensor("classes", classes, 3, torch.int64, feat.device)
    H, W = validate.check_classes_hw(classes)
    return feat.new_empty(B, 3, H, W)


def _refine_fake(sr, classes, num_branches):
    validate.check_tensor("sr", sr, 4)
    validate.check_tensor("classes", classes, 3, torch.int64, sr.device)
    return sr.new_empty(sr.shape)  # contiguous whatever sr's layout, as every backend returns it


_FAKES = {"route_upsample": _route_upsample_fake, "classify": _classify_fake, "route": _route_fake,
          "upsample": _upsample_fake, "refine": _refine_fake}


def register_all() -> None:
    define_schemas()
    for name in OPS:
        qual = f"pcsr::{name}"
        # CPU and CUDA both go through the Python backend choice; "meta" covers tensors
        # on the meta device (no data).
        torch.library.register_kernel(qual, ("cpu", "cuda"), _IMPLS[name])
        torch.library.register_fake(qual, _FAKES[name])


def _exact(fn):
    """A reference op that takes the ``precision`` argument: it computes exactly whatever it says."""
    def call(*args):
        return fn(*args[:-1])

    call.__name__ = call.__qualname__ = fn.__name__
    return call


# The reference backend: always present, any device. ``precision`` (route_upsample,
# upsample; checked in the wrappers above) is the triton backend's knob: the reference
# computes exactly.
backend.register("reference", {name: (_exact if name in ("route_upsample", "upsample") else (lambda f: f))(
    getattr(reference, f"{name}_ref")) for name in OPS}, lambda device_type: (True, ""))
