"""Property-based fuzzing (hypothesis) of every op on every CPU-runnable backend against the
reference: ``route_upsample``, ``classify``, ``route``, ``upsample`` and ``refine`` on the
``cpu`` backend and on ``triton`` (through its interpreter; on CUDA tensors where a GPU is
present), with random shapes (1-pixel and odd sizes, integer and non-integer scales, B up
to 3), M in 2..5, branch depths 1..4 and hidden widths, classifiers of 1..4 layers, k
(0, moderate, large of either sign), cost-aware and ADM routing, refinement on and off,
float32 and float64 (where the backend takes it), memory layouts (contiguous,
channels-last, strided views, transposed weights), classifier scales that saturate the
softmax, and now and then one NaN or infinity in an input or a weight.

Every case draws a :class:`Recipe` (sizes, options and a seed) and builds its tensors from
it, so a failure prints the recipe -- hypothesis shrinks it to a minimal one and prints
it, and ``print_blob`` adds a ``@reproduce_failure`` line -- and ``build(recipe)`` gives
the same tensors again; ``CHECKS[op](backend, device, recipe)`` replays the case by hand. Comparisons are those of :mod:`tie_aware`: classes equal except at
float64-near-ties, values compared where the 3x3 neighbourhood's classes agree, NaN-aware.

Cases per backend (all ops together): :data:`CI_CASES` by default, deterministic
(``derandomize``: the same cases on every run, no example database). More, locally:
``PCSR_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py`` (cases per backend, spread over the
ops in the same proportions); ``PCSR_FUZZ_SEED=n`` draws other cases than CI's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st

import backend_matrix
import pcsr_kernels
import tie_aware as ta
from conftest import random_mlp
from pcsr_kernels import reference

pytestmark = [pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")]

# Cases per backend in CI, and how they are spread over the ops. The Triton interpreter
# costs ~0.05 s per route launch and ~1 s per whole route_upsample, so its share goes to the
# cheap ops; the cpu backend spends most of its cases on the whole stage.
CI_CASES = 1000
SHARE = {"cpu": {"route_upsample": 0.45, "classify": 0.15, "route": 0.15, "upsample": 0.15, "refine": 0.10},
         "triton": {"route_upsample": 0.06, "classify": 0.14, "route": 0.40, "upsample": 0.14, "refine": 0.26}}
# Values: at most 4x the float32 reference's own error against float64 (the flash-attention
# rule: the fuzz scales inputs, and a saturated softmax amplifies every ulp of its logits),
# plus a floor of the suite's fixed tolerances (kernel_cases.py) for when it is exact.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
PROBS_TOL = {torch.float32: dict(rtol=1e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _cases(name: str, op: str) -> int:
    total = int(os.environ.get("PCSR_FUZZ_EXAMPLES", CI_CASES))
    return max(1, round(total * SHARE.get(name, SHARE["cpu"])[op]))


def _settings(name: str, op: str):
    seed = os.environ.get("PCSR_FUZZ_SEED")
    s = settings(max_examples=_cases(name, op), deadline=None, database=None, derandomize=seed is None,
                 print_blob=True, suppress_health_check=list(HealthCheck))

    def wrap(fn):
        fn = s(fn)
        return hypothesis_seed(int(seed))(fn) if seed is not None else fn
    return wrap


# --- the recipe of a case --------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """Everything a case's tensors are built from (printed when a case fails)."""
    B: int
    D: int
    h: int
    w: int
    H: int
    W: int
    branches: tuple       # hidden widths per branch, heaviest first: depth = len + 1
    cls_hidden: tuple     # classifier hidden widths
    k: float
    adaptive: bool
    refine: bool
    f64: bool
    layout: str           # contiguous | channels_last | strided | transposed_weights
    logit_scale: float    # the classifier's last layer is multiplied by it
    poison: tuple         # () or (where, value): one element of feat/lr/classifier/branch set to value
    seed: int

    @property
    def M(self) -> int:
        return len(self.branches)


@st.composite
def recipes(draw, tiny: bool, f64_ok: bool):
    B = draw(st.integers(1, 2 if tiny else 3))
    D = draw(st.integers(1, 6 if tiny else 12))
    h = draw(st.integers(1, 4 if tiny else 9))
    w = draw(st.integers(1, 4 if tiny else 9))
    kind = draw(st.sampled_from(["integer", "fraction", "any"]))
    if kind == "integer":
        s = draw(st.integers(1, 4))
        H, W = h * s, w * s
    elif kind == "fraction":  # one non-integer scale for both axes, as the model uses
        s = draw(st.sampled_from([1.5, 2.5, 2.7, 3.3, 3.7]))
        H, W = max(1, round(h * s)), max(1, round(w * s))
    else:  # anything, down to 1 pixel, downscaling included
        H, W = draw(st.integers(1, 4 * h + 3)), draw(st.integers(1, 4 * w + 3))
    cap = 160 if tiny else 2400  # HR pixels per image: the interpreter runs tiny grids only
    if H * W > cap:
        f = (cap / (H * W)) ** 0.5
        H, W = max(1, int(H * f)), max(1, int(W * f))
    M = draw(st.integers(2, 5))
    wid = st.integers(1, 24 if tiny else 40)
    branches = tuple(tuple(draw(st.lists(wid, min_size=0, max_size=3))) for _ in range(M))
    cls_hidden = tuple(draw(st.lists(st.integers(1, 20), min_size=0, max_size=3)))
    k = draw(st.one_of(st.just(0.0), st.floats(-3, 3), st.sampled_from([-50.0, 50.0, -1e3, 1e3])))
    adaptive = draw(st.booleans()) if not tiny else draw(st.integers(0, 4)) == 0  # ADM: 19 launches per step
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided", "transposed_weights"]))
    poison = ()
    if draw(st.integers(0, 9)) == 0:
        poison = (draw(st.sampled_from(["feat", "lr", "classifier", "branch"])),
                  draw(st.sampled_from([float("nan"), float("inf"), float("-inf")])))
    return Recipe(B, D, h, w, H, W, branches, cls_hidden, k, adaptive, draw(st.booleans()),
                  f64_ok and draw(st.booleans()), layout, draw(st.sampled_from([1.0, 1.0, 4.0, 30.0])), poison,
                  draw(st.integers(0, 2**31 - 1)))


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other element of a larger tensor
        big = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        big[..., ::2] = t
        return big[..., ::2]
    if layout == "transposed_weights" and t.dim() == 2:
        return t.t().contiguous().t()
    return t


def build(r: Recipe, device: str = "cpu") -> dict:
    """The tensors of a route_upsample call described by r (same recipe, same tensors)."""
    g = torch.Generator().manual_seed(r.seed)
    dtype = torch.float64 if r.f64 else torch.float32
    feat = torch.randn(r.B, r.D, r.h, r.w, generator=g, dtype=torch.float64)
    lr = torch.rand(r.B, 3, r.h, r.w, generator=g, dtype=torch.float64)
    classifier = random_mlp([r.D + 4, *r.cls_hidden, r.M], g, torch.float64, scale=2.0)
    classifier[-2] = classifier[-2] * r.logit_scale
    ups, depths = [], []
    for hid in r.branches:
        ups += random_mlp([r.D + 4, *hid, 3], g, torch.float64)
        depths.append(len(hid) + 1)
    cost = torch.rand(r.M, generator=g, dtype=torch.float64) + 0.05
    if r.poison:
        where, value = r.poison
        t = {"feat": feat, "lr": lr}.get(where)
        if t is None:
            params = classifier if where == "classifier" else ups
            t = params[int(torch.randint(0, len(params), (1,), generator=g))]
        t.view(-1)[int(torch.randint(0, t.numel(), (1,), generator=g))] = value
    conv = lambda t: _layout(t.to(dtype=dtype, device=device), r.layout)  # noqa: E731
    return dict(feat=conv(feat), lr=conv(lr), out_size=(r.H, r.W), classifier=[conv(t) for t in classifier],
                upsamplers=[conv(t) for t in ups], depths=depths, cost=cost.to(dtype=dtype, device=device))


def _on_cpu(p: dict) -> dict:
    return {k: ([t.cpu() for t in v] if isinstance(v, list) and v and isinstance(v[0], torch.Tensor)
                else v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in p.items()}


def _note(text: str) -> None:
    """A one-line replay recipe in hypothesis's report (nothing when replayed by hand)."""
    try:
        note(text)
    except InvalidArgument:
        pass


def _run(name: str, fn: str, *args, **kw):
    with pcsr_kernels.use_backend(name):
        return getattr(pcsr_kernels, fn)(*args, **kw)


# --- the properties ----------------------------------------------------------------------

def check_route_upsample(name: str, device: str, r: Recipe) -> None:
    _note(f"replay: build({r!r})")
    p = build(r, device)
    sr, cls = _run(name, "route_upsample", **p, k=r.k, adaptive=r.adaptive, refine=r.refine)
    q = _on_cpu(p)
    want_sr, want_cls = reference.route_upsample_ref(**q, k=r.k, adaptive=r.adaptive, refine=r.refine)
    assert sr.shape == want_sr.shape and sr.dtype == want_sr.dtype and cls.dtype == torch.int64
    q64 = ta.to64(q)
    probs64 = reference.classify_ref(q64["feat"], q64["out_size"], q64["classifier"])
    same = ta.check_classes(cls.cpu(), want_cls, ta.decision_margin(probs64, q["cost"], r.k, r.adaptive), r.M)
    # float64 values for the same classes: the values' error, apart from the routing's
    sr64 = reference.upsample_ref(q64["feat"], q64["lr"], want_cls, q64["upsamplers"], q64["depths"])
    if r.refine:
        sr64 = reference.refine_ref(sr64, want_cls, r.M)
    ta.assert_close_to_reference(sr.cpu(), want_sr, sr64, same, **TOL[sr.dtype])


def check_classify(name: str, device: str, r: Recipe) -> None:
    _note(f"replay: build({r!r})")
    p = build(r, device)
    got = _run(name, "classify", p["feat"], p["out_size"], p["classifier"])
    q = _on_cpu(p)
    want = reference.classify_ref(q["feat"], q["out_size"], q["classifier"])
    want64 = reference.classify_ref(*ta.to64((q["feat"], q["out_size"], q["classifier"])))
    ta.assert_close_to_reference(got.cpu(), want, want64, None, **PROBS_TOL[want.dtype])


def _probs(r: Recipe) -> torch.Tensor:
    """Probabilities [B, H, W, M] for route: softmax of random logits at the recipe's scale,
    some rows with exactly tied entries, some with exact zeros, maybe one poisoned entry."""
    g = torch.Generator().manual_seed(r.seed)
    logits = torch.randn(r.B, r.H, r.W, r.M, generator=g, dtype=torch.float64) * r.logit_scale
    tie = torch.rand(r.B, r.H, r.W, generator=g) < 0.1
    logits[..., 1] = torch.where(tie, logits[..., 0], logits[..., 1])
    probs = torch.softmax(logits, -1)
    zero = torch.rand(r.B, r.H, r.W, r.M, generator=g) < 0.05
    probs = probs.masked_fill(zero, 0.0)
    if r.poison:
        probs.view(-1)[int(torch.randint(0, probs.numel(), (1,), generator=g))] = r.poison[1]
    return probs.to(torch.float64 if r.f64 else torch.float32)


def check_route(name: str, device: str, r: Recipe) -> None:
    _note(f"replay: _probs({r!r})")
    probs = _probs(r)
    cost = torch.rand(r.M, generator=torch.Generator().manual_seed(r.seed + 1), dtype=torch.float64) + 0.05
    cost = cost.to(probs.dtype)
    got = _run(name, "route", _layout(probs, r.layout).to(device), cost.to(device), r.k, r.adaptive)
    want = reference.route_ref(probs, cost, r.k, r.adaptive)
    ta.check_classes(got.cpu(), want, ta.decision_margin(probs.double(), cost, r.k, r.adaptive), r.M)


def _classes(r: Recipe) -> torch.Tensor:
    g = torch.Generator().manual_seed(r.seed + 2)
    c = torch.randint(0, r.M, (r.B, r.H, r.W), generator=g)
    if r.refine:  # some images of one class only, some with a class missing
        c[0] = c[0].clamp(max=r.M - 2)
    return c


def check_upsample(name: str, device: str, r: Recipe) -> None:
    _note(f"replay: build({r!r}), _classes(...)")
    p = build(r, device)
    classes = _classes(r)
    got = _run(name, "upsample", p["feat"], p["lr"], _layout(classes, r.layout).to(device), p["upsamplers"],
               p["depths"])
    q = _on_cpu(p)
    want = reference.upsample_ref(q["feat"], q["lr"], classes, q["upsamplers"], q["depths"])
    q64 = ta.to64(q)
    want64 = reference.upsample_ref(q64["feat"], q64["lr"], classes, q64["upsamplers"], q64["depths"])
    ta.assert_close_to_reference(got.cpu(), want, want64, None, **TOL[want.dtype])


def check_refine(name: str, device: str, r: Recipe) -> None:
    _note(f"replay: seed {r.seed}, _classes(...)")
    g = torch.Generator().manual_seed(r.seed)
    sr = torch.randn(r.B, 3, r.H, r.W, generator=g, dtype=torch.float64).to(torch.float64 if r.f64 else torch.float32)
    if r.poison:
        sr.view(-1)[int(torch.randint(0, sr.numel(), (1,), generator=g))] = r.poison[1]
    classes = _classes(r)
    got = _run(name, "refine", _layout(sr, r.layout).to(device), classes.to(device), r.M)
    want = reference.refine_ref(sr, classes, r.M)
    ta.assert_close_to_reference(got.cpu(), want, reference.refine_ref(sr.double(), classes, r.M), None,
                                 **TOL[want.dtype])


CHECKS = {"route_upsample": check_route_upsample, "classify": check_classify, "route": check_route,
          "upsample": check_upsample, "refine": check_refine}


# --- the tests: one per op, each over every backend ----------------------------------------

# --- regression cases found by the fuzzer (run first, on every backend) --------------------

NAN = float("nan")
REGRESSIONS = {
    # An output axis as long as the LR axis (here W = w = 2) is torch's identity: the pixel
    # reads one tap. The kernels read the neighbour too, with weight 0, and 0 * NaN put the
    # neighbour's NaN into the pixel (geometry.bilinear_axis now gives i1 = i0 there).
    "route_upsample": [Recipe(B=1, D=1, h=1, w=2, H=1, W=2, branches=((), ()), cls_hidden=(), k=0.0, adaptive=True,
                              refine=False, f64=False, layout="contiguous", logit_scale=1.0, poison=("lr", NAN),
                              seed=0),
                       # Logits spread by hundreds and k = -1000: the cpu backend's routing from
                       # the logits took a probability below 2^-149 for 0 (score -inf) while the
                       # reference's softmax kept the smallest subnormal, and the cost term made
                       # that branch win (pixel_math.h route_logits now forms such pixels'
                       # probabilities as the reference does).
                       Recipe(B=1, D=1, h=1, w=5, H=3, W=15, branches=((), (), (), (), ()), cls_hidden=(), k=-1000.0,
                              adaptive=False, refine=False, f64=False, layout="contiguous", logit_scale=30.0,
                              poison=(), seed=0)],
}


def _fuzz(op: str, name: str, device: str) -> None:
    tiny = name == "triton" and device == "cpu"
    check = CHECKS[op]

    def run(r):
        check(name, device, r)

    for r in REGRESSIONS.get(op, []):
        run = example(r)(run)
    run = _settings(name, op)(given(recipes(tiny=tiny, f64_ok=backend_matrix.supports_float64(name)))(run))
    run()


@pytest.mark.parametrize("name,device", backend_matrix.params())
@pytest.mark.parametrize("op", list(CHECKS))
def test_fuzz(op, name, device):
    _fuzz(op, name, device)

