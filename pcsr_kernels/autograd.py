"""Autograd for ``pcsr::classify``, ``pcsr::upsample``, ``pcsr::refine`` and
``pcsr::route_upsample`` (``torch.library.register_autograd``), on every backend.

Routing is piecewise constant: a class changes only where a pixel crosses a decision
boundary, so its derivative is zero almost everywhere. The gradients are therefore those
of the op with the classes held at what the forward chose:

- ``classify``: probs = softmax(classifier(inputs)) -> ``feat`` and the classifier's weights;
- ``upsample``: sr = U_class(inputs) + bilinear(lr) -> ``feat``, ``lr`` and the chosen
  branches' weights (a branch no pixel chose gets a zero gradient);
- ``refine``: linear in ``sr`` (a 3x3 mean where the classes say so) -> ``sr``;
- ``route_upsample``: ``refine(upsample(...))`` at the returned classes -> ``feat``,
  ``lr`` and the upsamplers. The classifier's probabilities are not returned, so the
  classifier, ``cost`` and ``k`` reach the output only through the classes: no gradient
  (``None``, as for any input an output does not depend on differentiably).

The backward re-runs the pure-PyTorch reference (:mod:`pcsr_kernels.reference`) under
``torch.enable_grad`` with the forward's classes, whatever backend ran the forward. This
matches the forward's routing exactly (the classes are an output, saved in
``setup_context``), needs nothing of a backend but its forward, and makes the gradient of
every backend the reference's gradient: the backends differ in their forward only by float
rounding. The cost is a reference forward plus its backward, and the reference's
activations of the whole image are held while it runs (the reference bands its forward
only). Gradients are first order: a double backward (``create_graph=True``) is refused at
``backward()``, and so is tracing the backward with torch.compile (its re-run of the
reference depends on the values; the forward compiles, through the fake kernels).
"""
from __future__ import annotations

import torch
import torch._guards

from . import reference


def _need(ctx, i: int) -> bool:
    return bool(ctx.needs_input_grad[i])


def _fit(ctx, grads: tuple) -> tuple:
    # The dispatcher drops trailing arguments equal to their defaults before the autograd
    # kernel sees them (setup_context gets them filled back in): return one gradient per
    # argument actually passed.
    return grads[:len(ctx.needs_input_grad)]


def _any(flags) -> bool:
    return any(bool(f) for f in flags)


def _check_backward(op: str, ctx) -> None:
    # Grad mode is on in a backward exactly when it runs with create_graph=True: the
    # gradients computed here are not differentiable, so say so instead of returning
    # tensors whose own gradient would silently be zero.
    if torch.is_grad_enabled():
        raise RuntimeError(f"pcsr::{op}: double backward (create_graph=True) is not supported; "
                           "its gradients are first-order only")
    # torch.compile traces a backward with fake tensors; the reference re-run reads values
    # (argument checks, which pixels each branch takes), which a trace cannot.
    if torch._guards.detect_fake_mode(tuple(ctx.saved_tensors)) is not None:
        raise NotImplementedError(
            f"pcsr::{op}: its backward cannot be traced by torch.compile / AOTAutograd (it re-runs the "
            "pure-PyTorch reference, whose control flow depends on the values); compile the forward only "
            "(torch.no_grad) or keep the differentiated call outside the compiled region")


def _grads(output, grad_output, groups):
    """Gradients of ``output`` (weighted by ``grad_output``) with respect to ``groups``:
    a list of (tensors, flags). Returns, per group, a list with a gradient for each flagged
    tensor (zeros where the output does not depend on it) and None elsewhere."""
    leaves, where = [], []
    for gi, (tensors, flags) in enumerate(groups):
        for ti, (t, f) in enumerate(zip(tensors, flags)):
            if f:
                leaves.append(t)
                where.append((gi, ti))
    out = [[None] * len(tensors) for tensors, _ in groups]
    if not leaves:
        return out
    got = torch.autograd.grad(output, leaves, grad_output, allow_unused=True)
    for (gi, ti), leaf, g in zip(where, leaves, got):
        out[gi][ti] = torch.zeros_like(leaf) if g is None else g
    return out


def _leaves(tensors, flags):
    """Detached copies of ``tensors``, those flagged requiring grad: the reference re-run
    builds its own graph from them, apart from the caller's."""
    return [t.detach().requires_grad_(bool(f)) for t, f in zip(tensors, flags)]


# --- classify(feat, out_size, classifier) -> probs -----------------------------------

def _classify_setup(ctx, inputs, output):
    feat, out_size, classifier = inputs
    ctx.out_size = [int(s) for s in out_size]
    ctx.n_cls = len(classifier)
    ctx.save_for_backward(feat, *classifier)


def _classify_backward(ctx, grad_probs):
    _check_backward("classify", ctx)
    feat, *classifier = ctx.saved_tensors
    flags = [_need(ctx, 0)], list(ctx.needs_input_grad[2])
    with torch.enable_grad():
        (f,) = _leaves([feat], flags[0])
        cls = _leaves(classifier, flags[1])
        probs = reference.classify_ref(f, ctx.out_size, cls)
        (g_feat,), g_cls = _grads(probs, grad_probs, [([f], flags[0]), (cls, flags[1])])
    return _fit(ctx, (g_feat, None, g_cls))


# --- upsample(feat, lr, classes, upsamplers, depths, precision) -> sr -------------------

def _upsample_setup(ctx, inputs, output):
    feat, lr, classes, upsamplers, depths, _precision = inputs
    ctx.depths = [int(d) for d in depths]
    ctx.n_ups = len(upsamplers)
    ctx.save_for_backward(feat, lr, classes, *upsamplers)


def _upsample_grads(feat, lr, classes, ups, depths, flags, grad_sr, refine_branches=None):
    """Gradients of the reference ``upsample`` (then ``refine`` with ``refine_branches``
    branches, when given) at fixed ``classes``: (g_feat, g_lr, g_upsamplers)."""
    f_flag, lr_flag, ups_flags = flags
    with torch.enable_grad():
        (f,) = _leaves([feat], [f_flag])
        (l,) = _leaves([lr], [lr_flag])
        u = _leaves(ups, ups_flags)
        sr = reference.upsample_ref(f, l, classes, u, depths)
        if refine_branches is not None:
            sr = reference.refine_ref(sr, classes, refine_branches)
        (g_feat,), (g_lr,), g_ups = _grads(sr, grad_sr, [([f], [f_flag]), ([l], [lr_flag]), (u, ups_flags)])
    return g_feat, g_lr, g_ups


def _upsample_backward(ctx, grad_sr):
    _check_backward("upsample", ctx)
    feat, lr, classes, *ups = ctx.saved_tensors
    flags = (_need(ctx, 0), _need(ctx, 1), list(ctx.needs_input_grad[3]))
    g_feat, g_lr, g_ups = _upsample_grads(feat, lr, classes, ups, ctx.depths, flags, grad_sr)
    return _fit(ctx, (g_feat, g_lr, None, g_ups, None, None))


# --- refine(sr, classes, num_branches) -> refined --------------------------------------

def _refine_setup(ctx, inputs, output):
    _sr, classes, num_branches = inputs
    ctx.num_branches = int(num_branches)
    ctx.save_for_backward(classes)


def _refine_backward(ctx, grad_refined):
    _check_backward("refine", ctx)
    if not _need(ctx, 0):
        return None, None, None
    (classes,) = ctx.saved_tensors
    # refine is linear in sr (a fixed 3x3 mean where the classes say so): its Jacobian
    # does not depend on sr, so the reference is differentiated at sr = 0 and sr need not
    # be saved.
    with torch.enable_grad():
        sr = grad_refined.new_zeros(grad_refined.shape).requires_grad_(True)
        out = reference.refine_ref(sr, classes, ctx.num_branches)
        [[g_sr]] = _grads(out, grad_refined, [([sr], [True])])
    return g_sr, None, None


# --- route_upsample(feat, lr, out_size, classifier, upsamplers, depths, cost, k, adaptive,
#                    refine, precision) -> (sr, classes) -------------------------------

def _route_upsample_setup(ctx, inputs, output):
    feat, lr, _out_size, classifier, upsamplers, depths, _cost, _k, _adaptive, refine, _precision = inputs
    _sr, classes = output
    ctx.depths = [int(d) for d in depths]
    ctx.refine = bool(refine)
    ctx.n_cls = len(classifier)
    ctx.save_for_backward(feat, lr, classes, *upsamplers)


def _route_upsample_backward(ctx, grad_sr, _grad_classes):
    _check_backward("route_upsample", ctx)
    feat, lr, classes, *ups = ctx.saved_tensors
    flags = (_need(ctx, 0), _need(ctx, 1), list(ctx.needs_input_grad[4]))
    M = len(ctx.depths)
    g_feat, g_lr, g_ups = _upsample_grads(feat, lr, classes, ups, ctx.depths, flags, grad_sr,
                                          refine_branches=M if ctx.refine else None)
    return _fit(ctx, (g_feat, g_lr, None, [None] * ctx.n_cls, g_ups, None, None, None, None, None, None))


_FORMULAS = {
    "classify": (_classify_backward, _classify_setup),
    "upsample": (_upsample_backward, _upsample_setup),
    "refine": (_refine_backward, _refine_setup),
    "route_upsample": (_route_upsample_backward, _route_upsample_setup),
}


_registered = False


def register_all() -> None:
    """Register the formulas above on ``pcsr::<op>`` (the ops must be defined); once."""
    global _registered
    if _registered:
        return
    _registered = True
    for name, (backward, setup) in _FORMULAS.items():
        torch.library.register_autograd(f"pcsr::{name}", backward, setup_context=setup)
