"""Registration of the ``torch.ops.pcsr`` operators: schemas (when the compiled extension
is absent), the backend choice, and the fake (meta) kernels used by ``torch.compile``.

Where the kernels are: the compiled extension registers its C++ kernels as the ops'
``CPU`` (and, built with CUDA, ``CUDA``) kernels (``csrc/``); a C++ caller gets them
straight from the dispatcher. This module registers, on the dispatcher's ``BackendSelect``
key -- visited after autograd and before the device kernels, also under
``torch.inference_mode`` -- the backend choice (``PCSR_BACKEND`` / ``set_backend``): the
``cpu`` / ``cuda`` backends go on to those compiled kernels, which check their arguments
themselves; ``reference`` and ``triton`` are validated here and run in Python. Tensors on
other devices (``meta``) go on to their own kernels.

The public Python wrappers (``pcsr_kernels.route_upsample`` ...) call
``torch.ops.pcsr.<op>.default`` and nothing else.
"""
from __future__ import annotations

import torch

from . import backend, memory, reference, validate
from . import precision as precision_mod
from .schemas import SCHEMAS

OPS = tuple(SCHEMAS)
# Backends whose kernels are the compiled extension's (the ops' CPU / CUDA kernels): they
# check every argument in C++ (csrc/common/op_args.h), so nothing is checked twice.
COMPILED = ("cpu", "cuda")
_lib = None
_impl_lib = None


def define_schemas() -> None:
    """Define the schemas from Python when the C++ extension did not."""
    global _lib
    if hasattr(torch.ops.pcsr, "route_upsample"):
        return
    _lib = torch.library.Library("pcsr", "DEF")
    for schema in SCHEMAS.values():
        _lib.define(schema)


# --- implementations: validate, check the memory estimate, hand over to the backend ---
# For the Python backends the checks run here, then the memory guard (see
# pcsr_kernels.memory), before any allocation. For the compiled backends the guard runs
# here too (it is Python; a documented exception to "one C++ path"), reading only sizes:
# arguments whose sizes it cannot read are left to the C++ checks that follow. The fake
# kernels below do not run it: fake tensors allocate nothing.

def _compiled_precision(precision):
    """An explicit ``precision`` goes to the compiled kernel, which checks it; None becomes
    the configured setting (``set_precision`` / ``PCSR_PRECISION``, checked where it is read)."""
    return precision_mod.resolve(None) if precision is None else precision


def _guard_compiled(op: str, estimate) -> None:
    """The memory guard before a compiled kernel: ``estimate() -> (what, bytes, device)``."""
    try:
        what, need, device = estimate()
    except (ValueError, TypeError, IndexError, AttributeError, RuntimeError):
        return  # malformed arguments: the kernel's checks name them
    memory.check(op, what, need, device)


def _widths(params) -> list[int]:
    return [int(params[0].shape[1])] + [int(params[i].shape[0]) for i in range(0, len(params), 2)]


def _route_upsample(feat, lr, out_size, classifier, upsamplers, depths, cost, k=0.0, adaptive=False, refine=True,
                    precision=None):
    name = backend.resolved_name(feat.device.type, feat.dtype, "route_upsample")

    def estimate():
        B, D, h, w = feat.shape
        H, W = (int(s) for s in out_size)
        branches = validate.split_branches(upsamplers, depths)
        need = memory.route_upsample_bytes(name, B, D, h, w, H, W, [_widths(classifier)] + [_widths(b) for b in branches],
                                           feat.element_size(), bool(adaptive), bool(refine))
        return f"out_size (H, W) = ({H}, {W}) with B = {B}, M = {len(depths)}", need, feat.device

    if name in COMPILED:
        _guard_compiled("route_upsample", estimate)
        prec = _compiled_precision(precision)
    else:
        # The triton backend on CUDA checks the cost's values on the device: a host check
        # would wait for the GPU on every call and forbid CUDA-graph capture.
        on_device = feat.device.type == "cuda" and name == "triton"
        validate.route_upsample_args(feat, lr, out_size, classifier, upsamplers, depths, cost, k, values=not on_device)
        if on_device:
            validate.check_cost_on_device(cost)
        prec = precision_mod.resolve(precision)
        memory.check("route_upsample", *estimate())
    return backend.impls(name)["route_upsample"](feat, lr, [int(s) for s in out_size], list(classifier),
                                                 list(upsamplers), list(depths), cost, float(k), bool(adaptive),
                                                 bool(refine), prec)


def _classify(feat, out_size, classifier):
    name = backend.resolved_name(feat.device.type, feat.dtype, "classify")

    def estimate():
        B, D, h, w = feat.shape
        H, W = (int(s) for s in out_size)
        widths = _widths(classifier)
        need = memory.classify_bytes(name, B, D, h, w, H, W, widths, feat.element_size())
        return f"out_size (H, W) = ({H}, {W}) with B = {B}, M = {widths[-1]}", need, feat.device

    if name in COMPILED:
        _guard_compiled("classify", estimate)
    else:
        _, D, _, _ = validate.check_feat(feat)
        validate.check_out_size(out_size)
        validate.check_mlp("classifier", classifier, D + 4, None, feat.dtype, feat.device)
        memory.check("classify", *estimate())
    return backend.impls(name)["classify"](feat, [int(s) for s in out_size], list(classifier))


def _route(probs, cost, k=0.0, adaptive=False):
    name = backend.resolved_name(probs.device.type, probs.dtype, "route")

    def estimate():
        B, H, W, M = probs.shape
        need = memory.route_bytes(name, B, H, W, M, probs.element_size(), bool(adaptive), probs.is_contiguous())
        return f"probs of shape {tuple(probs.shape)}", need, probs.device

    if name in COMPILED:
        _guard_compiled("route", estimate)
    else:
        validate.check_tensor("probs", probs, 4)
        memory.check("route", *estimate())
    return backend.impls(name)["route"](probs, cost, float(k), bool(adaptive))


def _upsample(feat, lr, classes, upsamplers, depths, precision=None):
    name = backend.resolved_name(feat.device.type, feat.dtype, "upsample")

    def estimate():
        B, D, h, w = feat.shape
        _, H, W = classes.shape
        branches = validate.split_branches(upsamplers, depths)
        need = memory.upsample_bytes(name, B, D, h, w, H, W, [_widths(b) for b in branches], feat.element_size())
        return f"classes of shape {tuple(classes.shape)} (an output of [B, 3, {H}, {W}])", need, feat.device

    if name in COMPILED:
        _guard_compiled("upsample", estimate)
        prec = _compiled_precision(precision)
    else:
        validate.check_feat(feat)
        validate.check_branches(upsamplers, depths, feat)
        validate.check_classes_hw(classes)
        prec = precision_mod.resolve(precision)
        memory.check("upsample", *estimate())
    return backend.impls(name)["upsample"](feat, lr, classes, list(upsamplers), list(depths), prec)


def _refine(sr, classes, num_branches):
    name = backend.resolved_name(sr.device.type, sr.dtype, "refine")

    def estimate():
        B, _, H, W = sr.shape
        return f"sr of shape {tuple(sr.shape)}", memory.refine_bytes(name, B, H, W, sr.element_size()), sr.device

    if name in COMPILED:
        _guard_compiled("refine", estimate)
    else:
        validate.check_tensor("sr", sr, 4)
        memory.check("refine", *estimate())
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


# The keys below BackendSelect: where a call for a device without a backend choice goes on.
_AFTER_SELECT = torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.BackendSelect)


def _select(name: str):
    """The BackendSelect kernel of op ``name``: the backend choice for CPU and CUDA tensors
    (the op's first argument -- feat, probs or sr -- gives the device)."""
    op = getattr(torch.ops.pcsr, name).default
    impl = _IMPLS[name]

    def select(keyset, *args):
        if args[0].device.type in ("cpu", "cuda"):
            return impl(*args)
        return op.redispatch(keyset & _AFTER_SELECT, *args)

    select.__name__ = select.__qualname__ = f"select_{name}"
    return select


def register_all() -> None:
    global _impl_lib
    define_schemas()
    _impl_lib = torch.library.Library("pcsr", "IMPL")
    for name in OPS:
        _impl_lib.impl(name, _select(name), "BackendSelect", with_keyset=True)
        torch.library.register_fake(f"pcsr::{name}", _FAKES[name])


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
