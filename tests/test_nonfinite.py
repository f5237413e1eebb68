"""The non-finite policy (README, "Non-finite values") on every backend.

NaN and +-inf placed in ``feat``, ``lr``, every weight of the classifier and of each branch,
and the probabilities / unrefined image given to the stage ops: each backend must give what
the reference computes -- NaN exactly where the reference has NaN, +-inf equal, the other
values within the usual tolerance, classes in [0, M) and equal to the reference's (up to
near-ties, :mod:`tie_aware`). A non-finite ``cost`` or ``k`` is an error on every backend.
The reference's own routing rules are checked against an independent statement of them.

Placements pick one element of the tensor at random (seeded by the placement's name). The
problem is small (an 8x10 output, 3 branches of depths 3, 2, 1, a 2-layer classifier) so
that the Triton interpreter runs the whole matrix in seconds.
"""
from __future__ import annotations

import math
import zlib

import pytest
import torch

import backend_matrix
import pcsr_kernels
import tie_aware as ta
from conftest import random_problem
from pcsr_kernels import reference

# NaN arithmetic is the point here: numpy (under the Triton interpreter) warns about it.
pytestmark = [pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")]

NAN, INF = float("nan"), float("inf")
TOL = dict(rtol=1e-5, atol=1e-5)  # kernel_cases.py: worst measured ~5e-7 on these widths
PROBS_TOL = dict(rtol=1e-5, atol=2e-6)
H, W = 8, 10
HIDDEN = [[7, 6], [5], []]  # branch widths: depths 3, 2, 1
CLS_HIDDEN = [6]


def _problem(name: str):
    return random_problem(2, 5, 3, 4, H, W, HIDDEN, CLS_HIDDEN, seed=zlib.crc32(name.encode()))


def _places():
    """(argument, index into the list or None, label) for feat, lr and every weight."""
    out = [("feat", None, "feat"), ("lr", None, "lr")]
    for i in range(2 * (len(CLS_HIDDEN) + 1)):
        out.append(("classifier", i, f"classifier[{i}]"))
    at = 0
    for j, hid in enumerate(HIDDEN):
        for i in range(2 * (len(hid) + 1)):
            out.append(("upsamplers", at, f"branch{j}[{i}]"))
            at += 1
    return out


PLACES = _places()


def _poison(p: dict, arg: str, i, value: float, label: str) -> dict:
    """A copy of problem p with one element of p[arg] (or p[arg][i]) set to value."""
    q = {k: (list(v) if isinstance(v, list) else v) for k, v in p.items()}
    t = (q[arg] if i is None else q[arg][i]).clone()
    g = torch.Generator().manual_seed(zlib.crc32(f"{label}{value}".encode()))
    t.view(-1)[int(torch.randint(0, t.numel(), (1,), generator=g))] = value
    if i is None:
        q[arg] = t
    else:
        q[arg][i] = t
    return q


def _to(p: dict, device: str) -> dict:
    return {k: ([t.to(device) for t in v] if isinstance(v, list) and v and isinstance(v[0], torch.Tensor)
                else v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in p.items()}


def _values(n: int) -> tuple[float, float]:
    """(value for route_upsample, value for the stage op) at placement n: NaN in one, an
    infinity in the other, so that every placement meets both across the two tests;
    +inf and -inf alternate over the placements."""
    inf = INF if (n // 2) % 2 else -INF
    return (NAN, inf) if n % 2 == 0 else (inf, NAN)


def _cases():
    out = []
    for n, (arg, i, label) in enumerate(PLACES):
        value = _values(n)[0]
        adaptive = (n // 2) % 2 == 1  # cost-aware and ADM routing alternate too
        out.append(pytest.param(arg, i, label, value, adaptive, id=f"{label}-{value}-{'adm' if adaptive else 'k'}"))
    return out


@pytest.mark.parametrize("name,device", backend_matrix.params())
@pytest.mark.parametrize("arg,i,label,value,adaptive", _cases())
def test_route_upsample_propagates_like_the_reference(name, device, arg, i, label, value, adaptive):
    q = _poison(_problem(label), arg, i, value, label)
    want_sr, want_cls = reference.route_upsample_ref(**q, k=0.3, adaptive=adaptive)
    with pcsr_kernels.use_backend(name):
        sr, cls = pcsr_kernels.route_upsample(**_to(q, device), k=0.3, adaptive=adaptive)
    probs64 = reference.classify_ref(*ta.to64((q["feat"], q["out_size"], q["classifier"])))
    margin = ta.decision_margin(probs64, q["cost"], 0.3, adaptive)
    same = ta.check_classes(cls.cpu(), want_cls, margin, len(HIDDEN), f"{label}={value}: ")
    ta.assert_close_nan_aware(sr.cpu(), want_sr, same, f"{label}={value}: ", **TOL)


@pytest.mark.parametrize("name,device", backend_matrix.params())
def test_classify_propagates_like_the_reference(name, device):
    for n, (arg, i, label) in enumerate(PLACES):
        if arg not in ("feat", "classifier"):
            continue
        value = _values(n)[1]
        q = _poison(_problem(label), arg, i, value, label)
        want = reference.classify_ref(q["feat"], (H, W), q["classifier"])
        with pcsr_kernels.use_backend(name):
            got = pcsr_kernels.classify(q["feat"].to(device), (H, W), [t.to(device) for t in q["classifier"]])
        ta.assert_close_nan_aware(got.cpu(), want, None, f"{label}={value}: ", **PROBS_TOL)


@pytest.mark.parametrize("name,device", backend_matrix.params())
def test_upsample_propagates_like_the_reference(name, device):
    g = torch.Generator().manual_seed(2)
    classes = torch.randint(0, len(HIDDEN), (2, H, W), generator=g)
    for n, (arg, i, label) in enumerate(PLACES):
        if arg == "classifier":
            continue
        value = _values(n)[1]
        q = _poison(_problem(label), arg, i, value, label)
        want = reference.upsample_ref(q["feat"], q["lr"], classes, q["upsamplers"], q["depths"])
        d = _to(q, device)
        with pcsr_kernels.use_backend(name):
            got = pcsr_kernels.upsample(d["feat"], d["lr"], classes.to(device), d["upsamplers"], q["depths"])
        ta.assert_close_nan_aware(got.cpu(), want, None, f"{label}={value}: ", **TOL)


def _route_rows():
    """Probability rows (M = 3) that meet every case of the routing rule."""
    rows = [[0.2, NAN, 0.8],    # one NaN: branch 0 (torch.argmax alone would say 1)
            [NAN, NAN, NAN],    # all NaN: branch 0
            [0.3, 0.3, NAN],
            [0.0, 0.0, 1.0],    # log 0 = -inf loses
            [INF, 0.5, 0.5],    # +inf wins
            [0.1, INF, INF],    # a tie at +inf: the first
            [0.0, 0.0, 0.0],    # all -inf: a tie, the first
            [-0.1, 0.5, 0.6],   # log of a negative is NaN: branch 0
            [0.25, 0.5, 0.25],
            [0.5, 0.25, 0.25]]
    return torch.tensor(rows, dtype=torch.float64)


def _rule(probs: torch.Tensor, cost: torch.Tensor, k: float) -> torch.Tensor:
    """The routing rule of the README, one pixel at a time in Python floats."""
    out = []
    for row in probs.reshape(-1, probs.shape[-1]).tolist():
        s = [(math.log(p) if p > 0 else (-INF if p == 0 else NAN)) - k * math.log(c)
             for p, c in zip(row, cost.tolist())]
        if any(math.isnan(x) for x in s):
            out.append(0)
        else:
            out.append(max(range(len(s)), key=lambda j: (s[j], -j)))  # first index of the max
    return torch.tensor(out).view(probs.shape[:-1])


@pytest.mark.parametrize("k", [0.0, 1.5, -2.0])
def test_reference_routing_rule(k):
    probs = _route_rows().view(2, 5, 1, 3)
    cost = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    assert torch.equal(reference.route_ref(probs, cost, k), _rule(probs, cost, k))


def test_reference_adm_leaves_non_finite_values_out():
    g = torch.Generator().manual_seed(4)
    for M in (2, 3, 4):
        s = torch.rand(60, generator=g, dtype=torch.float64)
        bad = torch.zeros(60, dtype=torch.bool)
        bad[[3, 17, 18, 40]] = True
        s[3], s[17], s[18], s[40] = NAN, INF, -INF, NAN
        got = reference.adm_ref(s, M)
        assert torch.equal(got[~bad], reference.adm_ref(s[~bad], M))  # the finite values alone
        assert bool((got[bad] == 0).all())
        assert bool((reference.adm_ref(torch.full((5,), NAN), M) == 0).all())  # nothing finite
        c = torch.tensor([0.4, NAN, 0.4, 0.4])  # finite values all equal: lightest, as before
        assert reference.adm_ref(c, M).tolist() == [M - 1, 0, M - 1, M - 1]


@pytest.mark.parametrize("name,device", backend_matrix.params())
def test_route_follows_the_rule(name, device):
    dtype = torch.float64 if backend_matrix.supports_float64(name) else torch.float32
    probs = _route_rows().view(2, 5, 1, 3).to(dtype)
    cost = torch.tensor([0.5, 0.3, 0.2], dtype=dtype)
    for k in (0.0, 1.5, -2.0):
        with pcsr_kernels.use_backend(name):
            got = pcsr_kernels.route(probs.to(device), cost.to(device), k)
        assert torch.equal(got.cpu(), reference.route_ref(probs, cost, k)), k


@pytest.mark.parametrize("name,device", backend_matrix.params())
def test_adm_leaves_non_finite_values_out(name, device):
    """ADM (route adaptive=True) with NaN/inf heavy mass, an image with no finite value,
    and one whose finite values are all equal."""
    g = torch.Generator().manual_seed(5)
    for M in (2, 3):
        probs = torch.softmax(torch.randn(3, 9, 11, M, generator=g) * 2, -1)
        probs[0, 2, 3, 0] = NAN
        probs[0, 5, :4, 0] = INF
        probs[0, 7, 7, :] = -INF
        probs[1] = NAN
        probs[2] = torch.softmax(torch.arange(M, dtype=torch.float32), 0)
        probs[2, 4, 4, 0] = NAN
        cost = torch.full((M,), 1.0 / M)
        with pcsr_kernels.use_backend(name):
            got = pcsr_kernels.route(probs.to(device), cost.to(device), 0.0, True).cpu()
        want = reference.route_ref(probs, cost, 0.0, True)
        margin = ta.adm_margin(probs.double())
        ta.check_classes(got, want, margin, M, f"M={M}: ")
        assert bool((got[0, 2, 3] == 0) & (got[0, 5, :4] == 0).all() & (got[0, 7, 7] == 0))
        assert bool((got[1] == 0).all()) and got[2, 4, 4] == 0
        assert int((got[2] == M - 1).sum()) == 9 * 11 - 1


@pytest.mark.parametrize("name,device", backend_matrix.params())
def test_refine_propagates_like_the_reference(name, device):
    g = torch.Generator().manual_seed(6)
    sr = torch.randn(2, 3, H, W, generator=g)
    sr[0, 1, 3, 4], sr[1, 0, 0, 0], sr[1, 2, 5, 5], sr[1, 2, 5, 6] = NAN, INF, INF, -INF
    classes = torch.randint(0, 3, (2, H, W), generator=g)
    want = reference.refine_ref(sr, classes, 3)
    with pcsr_kernels.use_backend(name):
        got = pcsr_kernels.refine(sr.to(device), classes.to(device), 3).cpu()
    ta.assert_close_nan_aware(got, want, None, **TOL)
    assert bool(torch.isnan(want).any())  # the placements reach refined pixels (inf - inf included)


@pytest.mark.parametrize("name,device", backend_matrix.params() + [pytest.param("reference", "cpu", id="reference")])
@pytest.mark.parametrize("bad", [NAN, INF, -INF, 0.0, -0.5])
def test_bad_cost_is_an_error(name, device, bad):
    p = _to(_problem("cost"), device)
    cost = p["cost"].clone()
    cost[1] = bad
    probs = torch.softmax(torch.randn(1, 2, 3, 3), -1).to(device)
    with pcsr_kernels.use_backend(name):
        with pytest.raises(ValueError, match=r"cost entries must be finite and > 0"):
            pcsr_kernels.route_upsample(**dict(p, cost=cost))
        with pytest.raises(ValueError, match=r"cost entries must be finite and > 0"):
            pcsr_kernels.route(probs, cost)
        with pytest.raises(ValueError, match=r"k must be finite, got nan"):
            pcsr_kernels.route_upsample(**p, k=NAN)
