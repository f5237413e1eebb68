"""Gradients of the pcsr ops (``pcsr_kernels.autograd``): gradcheck in float64 on every
backend that computes in float64 (reference, cpu), Triton's gradients against the
reference's under the interpreter, and the refusals (double backward)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.autograd import gradcheck

import pcsr_kernels as pk
from backend_matrix import params as backend_params
from backend_matrix import supports_float64
from conftest import random_problem
from pcsr_kernels import reference

# (B, D, h, w, H, W, branch hidden widths, classifier hidden): odd sizes, non-integer scales
# (13/5 = 2.6, 9/4 = 2.25; 11/4 = 2.75, 10/3 = 3.33...), M = 2 and 3.
SHAPES = {
    "M2": (2, 3, 5, 4, 13, 9, [[7], []], [5]),
    "M3": (1, 2, 4, 3, 11, 10, [[6, 5], [4], []], []),
}


def _problem(name, dtype=torch.float64):
    """A random problem whose cost-aware routing (k = 0) uses every branch: the gradients
    of every branch are then checked. The classifier's last bias is shifted so that each
    branch wins somewhere (seeded: the same problem every run)."""
    B, D, h, w, H, W, hidden, cls_hidden = SHAPES[name]
    p = random_problem(B, D, h, w, H, W, hidden, cls_hidden, seed=7, dtype=torch.float64)
    M = len(hidden)
    logits = torch.log(reference.classify_ref(p["feat"], (H, W), p["classifier"])).reshape(-1, M)
    # Centre each branch's log-probability on its median: every branch then leads on a
    # good share of the pixels.
    p["classifier"][-1] = p["classifier"][-1] - logits.median(dim=0).values
    classes = reference.route_ref(reference.classify_ref(p["feat"], (H, W), p["classifier"]), p["cost"])
    counts = torch.bincount(classes.flatten(), minlength=M)
    assert bool((counts > 0).all()), f"problem {name}: a branch is never chosen ({counts.tolist()})"
    return {k: ([t.to(dtype) for t in v] if isinstance(v, list) and v and torch.is_tensor(v[0])
                else v.to(dtype) if torch.is_tensor(v) else v) for k, v in p.items()}


def _grad_inputs(p):
    feat = p["feat"].clone().requires_grad_()
    lr = p["lr"].clone().requires_grad_()
    ups = [t.clone().requires_grad_() for t in p["upsamplers"]]
    cls = [t.clone().requires_grad_() for t in p["classifier"]]
    return feat, lr, ups, cls


GRAD_BACKENDS = [pytest.param(b, id=b) for b in ("reference", "cpu")]


def _skip_unavailable(name):
    ok, why = pk.backend.availability(name, "cpu")
    if not ok:
        pytest.skip(f"{name}: {why}")
    if not supports_float64(name):
        pytest.skip(f"{name} does not compute in float64")


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", GRAD_BACKENDS)
def test_gradcheck_classify(name, shape):
    _skip_unavailable(name)
    p = _problem(shape)
    feat, _, _, cls = _grad_inputs(p)
    with pk.use_backend(name):
        assert gradcheck(lambda f, *c: pk.classify(f, p["out_size"], list(c)), (feat, *cls), fast_mode=True)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", GRAD_BACKENDS)
def test_gradcheck_upsample(name, shape):
    _skip_unavailable(name)
    p = _problem(shape)
    feat, lr, ups, _ = _grad_inputs(p)
    classes = reference.route_ref(reference.classify_ref(p["feat"], p["out_size"], p["classifier"]), p["cost"])
    with pk.use_backend(name):
        assert gradcheck(lambda f, x, *u: pk.upsample(f, x, classes, list(u), p["depths"]), (feat, lr, *ups), fast_mode=True)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", GRAD_BACKENDS)
def test_gradcheck_refine(name, shape):
    _skip_unavailable(name)
    p = _problem(shape)
    M = len(p["depths"])
    classes = reference.route_ref(reference.classify_ref(p["feat"], p["out_size"], p["classifier"]), p["cost"])
    sr = torch.randn(classes.shape[0], 3, *classes.shape[1:], dtype=torch.float64, requires_grad=True)
    with pk.use_backend(name):
        assert bool((pk.refine(sr, classes, M) != sr).any()), "the routing refines no pixel: a weak test"
        assert gradcheck(lambda s: pk.refine(s, classes, M), (sr,), fast_mode=True)


@pytest.mark.parametrize("routing", ["cost-aware+refine", "adaptive"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", GRAD_BACKENDS)
def test_gradcheck_route_upsample(name, shape, routing):
    _skip_unavailable(name)
    p = _problem(shape)
    feat, lr, ups, _ = _grad_inputs(p)
    adaptive = routing == "adaptive"
    k, refine = (0.0, True) if not adaptive else (0.0, False)

    def fn(f, x, *u):
        return pk.route_upsample(f, x, p["out_size"], p["classifier"], list(u), p["depths"], p["cost"], k,
                                 adaptive, refine)[0]

    with pk.use_backend(name):
        assert gradcheck(fn, (feat, lr, *ups), fast_mode=True)


@pytest.mark.parametrize("name", GRAD_BACKENDS)
def test_no_silent_none(name):
    """Every differentiable input of route_upsample gets a gradient (no UserWarning, no None);
    the classifier reaches the output only through the classes and gets None."""
    _skip_unavailable(name)
    p = _problem("M3")
    feat, lr, ups, cls = _grad_inputs(p)
    with pk.use_backend(name), warnings.catch_warnings():
        warnings.simplefilter("error")
        sr, classes = pk.route_upsample(feat, lr, p["out_size"], cls, ups, p["depths"], p["cost"])
        assert sr.requires_grad and not classes.requires_grad
        (sr * torch.randn_like(sr)).sum().backward()
    for t in (feat, lr, *ups):
        assert t.grad is not None and t.grad.shape == t.shape and bool(t.grad.ne(0).any())
    assert all(c.grad is None for c in cls)


def _reference_grads(p, classes, grad_sr, refine):
    """The gradients of the reference composite (plain autograd through the *_ref functions)
    at fixed classes: what every backend's backward must give."""
    feat, lr, ups, _ = _grad_inputs(p)
    sr = reference.upsample_ref(feat, lr, classes, ups, p["depths"])
    if refine:
        sr = reference.refine_ref(sr, classes, len(p["depths"]))
    return torch.autograd.grad(sr, [feat, lr, *ups], grad_sr)


@pytest.mark.parametrize("name,device", backend_params())
def test_gradients_equal_the_reference(name, device):
    """Each backend's route_upsample gradients (float32; Triton through its interpreter on
    CPU) against plain autograd through the reference composite at the backend's own
    classes. The backward re-runs that composite, so they agree to float rounding."""
    p = _problem("M2", torch.float32)
    p = {k: ([t.to(device) for t in v] if isinstance(v, list) and v and torch.is_tensor(v[0])
             else v.to(device) if torch.is_tensor(v) else v) for k, v in p.items()}
    feat, lr, ups, cls = _grad_inputs(p)
    with pk.use_backend(name):
        sr, classes = pk.route_upsample(feat, lr, p["out_size"], cls, ups, p["depths"], p["cost"], 0.0, False, True)
    with pk.use_backend("reference"):
        _, ref_classes = pk.route_upsample(**p)
    assert torch.equal(classes, ref_classes)
    g = torch.randn_like(sr)
    got = torch.autograd.grad(sr, [feat, lr, *ups], g)
    want = _reference_grads(p, classes, g, True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_double_backward_is_refused():
    p = _problem("M2")
    feat, lr, ups, _ = _grad_inputs(p)
    with pk.use_backend("reference"):
        sr = pk.upsample(feat, lr, torch.zeros(2, 13, 9, dtype=torch.int64), ups, p["depths"])
    (g,) = torch.autograd.grad(sr.sum(), feat, create_graph=False)
    assert g.shape == feat.shape
    with pk.use_backend("reference"):
        sr = pk.upsample(feat, lr, torch.zeros(2, 13, 9, dtype=torch.int64), ups, p["depths"])
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(sr.sum(), feat, create_graph=True)


def test_route_has_no_gradient():
    """route returns int64 classes: nothing to differentiate, and nothing pretends to."""
    p = _problem("M2")
    probs = reference.classify_ref(p["feat"], p["out_size"], p["classifier"]).requires_grad_()
    classes = pk.route(probs, p["cost"])
    assert classes.dtype == torch.int64 and not classes.requires_grad


def test_tracing_the_backward_is_refused_clearly():
    """torch.compile / AOTAutograd trace a backward with fake tensors: the reference re-run
    cannot be traced, and says so (instead of a data-dependent-guard error deep inside)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    p = _problem("M2", torch.float32)
    mode = FakeTensorMode()
    with mode:
        feat = mode.from_tensor(p["feat"]).requires_grad_()
        lr = mode.from_tensor(p["lr"])
        ups = [mode.from_tensor(t) for t in p["upsamplers"]]
        classes = mode.from_tensor(torch.zeros(2, 13, 9, dtype=torch.int64))
        sr = pk.upsample(feat, lr, classes, ups, p["depths"])  # the forward traces (fake kernel)
        assert sr.shape == (2, 3, 13, 9)
        with pytest.raises(NotImplementedError, match=r"pcsr::upsample: its backward cannot be traced"):
            sr.sum().backward()
