"""The reference path is the specification: check it against a direct, per-pixel statement
of the method written independently here (full coordinate grid, grid_sample lookups, the
authors' unfold refinement), on small random problems."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn.functional as F

from conftest import random_problem
from pcsr.model import make_mlp_input
from pcsr_kernels import reference
from pcsr_kernels.geometry import Tables, bilinear_axis, liif_coord, nearest_axis, rel_cell


def _direct(feat, lr, out_size, classifier, upsamplers, depths, cost, k, refine):
    """Whole-image, per-pixel PCSR (cost-aware routing) as the authors' code computes it."""
    B = feat.shape[0]
    H, W = out_size
    coord = torch.stack(torch.meshgrid(liif_coord(H), liif_coord(W), indexing="ij"), -1).view(1, H * W, 2).expand(B, -1, -1)
    cell = torch.tensor([2 / H, 2 / W]).view(1, 1, 2).expand(B, H * W, 2)
    inp = make_mlp_input(feat, coord, cell)  # [B, Q, D+4]
    probs = torch.softmax(reference.mlp_ref(inp, classifier), -1)
    classes = torch.argmax(probs / cost ** k, -1)  # the paper's rule, fine for moderate k
    res = torch.zeros(B, H * W, 3)
    at = 0
    for j, d in enumerate(depths):
        params = upsamplers[at:at + 2 * d]
        at += 2 * d
        m = classes == j
        res[m] = reference.mlp_ref(inp[m], params)
    base = F.grid_sample(lr, coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border",
                         align_corners=False)[:, :, 0, :].permute(0, 2, 1)
    sr = (res + base).permute(0, 2, 1).reshape(B, 3, H, W)
    classes = classes.view(B, H, W)
    if refine:
        M = len(depths)
        heavy = (classes < (M + 1) // 2).float()[:, None]
        mean = F.unfold(F.pad(sr, (1, 1, 1, 1), mode="replicate"), 3).view(B, 3, 9, H, W).mean(2)
        touch = F.unfold(F.pad(heavy, (1, 1, 1, 1), mode="replicate"), 3).view(B, 1, 9, H, W).sum(2) > 0
        cond = (heavy == 0) & touch
        cond[:, :, [0, -1], :] = False
        cond[:, :, :, [0, -1]] = False
        sr = torch.where(cond, mean, sr)
    return sr, classes


@pytest.mark.parametrize("h,w,H,W", [(5, 7, 10, 14), (6, 5, 18, 15), (4, 6, 16, 24), (5, 7, 12, 17), (7, 3, 26, 11)])
@pytest.mark.parametrize("M", [2, 3])
@pytest.mark.parametrize("refine", [False, True])
def test_reference_matches_direct_statement(h, w, H, W, M, refine):
    hidden = [[16, 16], [8], [4]][:M]
    p = random_problem(2, 6, h, w, H, W, hidden, [8], seed=H * 31 + W + M)
    k = 0.1
    sr, classes = reference.route_upsample_ref(**p, k=k, refine=refine)
    sr_d, classes_d = _direct(**p, k=k, refine=refine)
    assert torch.equal(classes, classes_d)
    # Sums run in another order (avg_pool vs unfold-mean, interpolate vs grid_sample): a few ulp.
    torch.testing.assert_close(sr, sr_d, rtol=1e-5, atol=1e-5)


def test_tables_equal_grid_sample():
    """Nearest-feature tables reproduce grid_sample(nearest), ties included (x2.5, x3.7)."""
    for h, w, H, W in [(5, 7, 13, 17), (10, 10, 25, 25), (10, 10, 37, 37), (27, 11, 100, 41), (4, 6, 10, 15)]:
        feat = torch.randn(1, 3, h, w)
        coord = torch.stack(torch.meshgrid(liif_coord(H), liif_coord(W), indexing="ij"), -1).view(1, -1, 2)
        g = F.grid_sample(feat, coord.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)[0, :, 0]
        t = Tables(h, w, H, W)
        assert torch.equal(feat[0][:, t.iy][:, :, t.ix].reshape(3, -1), g)


def test_relative_coordinates_are_exact_and_depend_only_on_the_phase():
    """ry/rx: the exact ((2i+1) n_in - (2 idx+1) n_out) / n_out rounded once to float32 (so a
    tile sees the whole image's values); LIIF's float32 chain, which the authors' code runs,
    is off by up to a few ulp of its coordinates times n_in (~n_in * 1e-7); the cell too."""
    for n, s in [(7, 4), (13, 4), (64, 4), (1000, 4), (9, 3), (5, 2)]:
        idx, rel = nearest_axis(n * s, n)
        exact = [((2 * i + 1) * n - (2 * int(j) + 1) * n * s) / (n * s) for i, j in enumerate(idx)]
        assert torch.equal(rel, torch.tensor(exact, dtype=torch.float64).float())
        assert torch.equal(rel, nearest_axis(s, 1)[1].repeat(n))  # one phase pattern everywhere
        c, q = liif_coord(n * s), liif_coord(n)
        torch.testing.assert_close(rel, (c - q[idx]) * n, rtol=0, atol=2.5e-7 * n)  # the authors' chain
        assert rel_cell(n * s, n) == rel_cell(s, 1) == float(torch.tensor(2.0 / s))
    # x2.5: every fifth HR pixel is an exact tie (rel = +-1) between two LR pixels, which
    # float32 rounding of the index breaks by position (why tiling refuses such scales);
    # elsewhere the pattern of a 2 -> 5 tile repeats.
    idx, rel = nearest_axis(25, 10)
    tile = nearest_axis(5, 2)[1].repeat(5)
    tie = rel.abs() == 1
    assert int(tie.sum()) == 5 and torch.equal(rel[~tie], tile[~tie]) and not torch.equal(rel, tile)


def test_bilinear_taps_match_interpolate():
    for h, H in [(5, 13), (7, 28), (10, 37), (3, 3), (9, 4)]:
        x = torch.randn(1, 1, h, 1)
        i0, i1, lam = bilinear_axis(H, h)
        mine = (1 - lam) * x[0, 0, i0, 0] + lam * x[0, 0, i1, 0]
        ref = F.interpolate(x, size=(H, 1), mode="bilinear", align_corners=False)[0, 0, :, 0]
        torch.testing.assert_close(mine, ref, rtol=1e-6, atol=1e-6)


def test_stages_compose_to_route_upsample():
    p = random_problem(2, 5, 6, 7, 15, 17, [[12], [6], [3]], [7], seed=3)
    sr, classes = reference.route_upsample_ref(**p, k=-0.3, refine=True)
    probs = reference.classify_ref(p["feat"], p["out_size"], p["classifier"])
    assert probs.shape == (2, 15, 17, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 15, 17))
    cls = reference.route_ref(probs, p["cost"], -0.3)
    up = reference.upsample_ref(p["feat"], p["lr"], cls, p["upsamplers"], p["depths"])
    assert torch.equal(cls, classes)
    assert len(torch.unique(cls)) == 3  # the case really routes to every branch
    assert torch.equal(reference.refine_ref(up, cls, 3), sr)


def test_extreme_k_routes_everything_one_way():
    p = random_problem(1, 5, 6, 7, 12, 14, [[12], [6]], [7], seed=4)
    _, light = reference.route_upsample_ref(**p, k=50.0)
    _, heavy = reference.route_upsample_ref(**p, k=-50.0)
    assert bool((light == 1).all()) and bool((heavy == 0).all())


# --- ADM against an independent statement of the authors' K-means ------------------------------

def _adm_lloyd(values, M: int, max_steps: int = 20) -> tuple[np.ndarray, int]:
    """ADM written from DESIGN.md §1 (Inference) as a plain NumPy Lloyd loop, independently
    of ``adm_ref``: (branch per value, Lloyd updates made).

    Values min-max normalised (all equal: every value to the lightest branch). M = 2: a
    first step from a single centre leaves the centres at (mean, 0); then Lloyd steps
    (nearest centre, ties to the lower index; an empty cluster's centre becomes 0) until
    the summed squared centre shift is <= 1e-4 or ``max_steps`` steps in all, counting the
    first; the labels of the last assignment; the highest centre is branch 0. M > 2 (the
    project's documented rule): centres start at (2j+1)/(2M), an empty cluster keeps its
    centre, the same loop. Arithmetic in float32 as the values are, cluster sums in
    float64 (what an exact mean needs), so that exact ties stay exact.
    """
    v = np.asarray(values, dtype=np.float32).ravel()
    lo, hi = v.min(), v.max()
    if not hi > lo:
        return np.full(v.shape, M - 1, dtype=np.int64), 0
    x = (v - lo) / (hi - lo)
    if M == 2:
        centres = np.array([np.sum(x, dtype=np.float64) / x.size, 0.0]).astype(np.float32)
    else:
        centres = (np.float32(2) * np.arange(M, dtype=np.float32) + np.float32(1)) / np.float32(2 * M)
    steps = 0
    for _ in range(max_steps - 1):
        labels = np.argmin(np.abs(x[:, None] - centres[None, :]), axis=1)  # first minimum: the lower index
        new = centres.copy()
        for j in range(M):
            members = x[labels == j]
            if members.size:
                new[j] = np.float32(np.sum(members, dtype=np.float64) / members.size)
            elif M == 2:
                new[j] = 0.0
        shift = np.sum(np.square(new - centres), dtype=np.float32)
        centres = new
        steps += 1
        if shift <= np.float32(1e-4):
            break
    by_centre = sorted(range(M), key=lambda j: (-centres[j], j))  # highest centre first
    branch = np.empty(M, dtype=np.int64)
    branch[by_centre] = np.arange(M)
    return branch[labels], steps


def _both(values, M):
    mine, _ = _adm_lloyd(values, M)
    return mine.tolist(), reference.adm_ref(torch.tensor(values, dtype=torch.float32), M).tolist()


@pytest.mark.parametrize("values,M,want", [
    # centres (0.5, 0) -> labels (1,1,0,0) -> centres (1, 0): moved 0.25 -> same labels, moved 0: stop.
    ([0.0, 0.0, 1.0, 1.0], 2, [1, 1, 0, 0]),
    # min-max normalisation first: the same problem shifted and scaled.
    ([3.0, 3.0, 5.0, 5.0], 2, [1, 1, 0, 0]),
    # (0.5, 0): 0.5 is 0 from c0 -> labels (1,0,0), centres (0.75, 0); 0.5 stays nearer 0.75: stop.
    ([0.0, 0.5, 1.0], 2, [1, 0, 0]),
    # (5/12, 0): 0.25 nearer c0 -> centres (0.625, 0); then 0.25 nearer 0 -> (1, 0.125); stable.
    ([0.0, 0.25, 1.0], 2, [1, 1, 0]),
    # The tie: (0.375, 0) -> labels (1,0,0,0), centres (0.5, 0); 0.25 is then exactly 0.25 from
    # both centres and goes to the lower index (heavy); nothing moves: stop. Ties to the upper
    # index would give (1, 1, 1, 0).
    ([0.0, 0.25, 0.25, 1.0], 2, [1, 0, 0, 0]),
    # The authors' demo-like case: Lloyd converges to {<= 0.15} light, {>= 0.6} heavy.
    ([0.0, 0.05, 0.1, 0.12, 0.8, 0.9, 1.0, 0.95, 0.15, 0.6], 2, [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]),
    # M = 3, centres (1/6, 1/2, 5/6) -> (0, 1/2, 1): highest centre -> branch 0.
    ([0.0, 0.0, 0.5, 0.5, 1.0, 1.0], 3, [2, 2, 1, 1, 0, 0]),
    # M = 3 with an empty middle cluster: it keeps its centre 1/2, so the centres rank
    # (1, 1/2, 0) and the zeros are branch 2 (an empty centre moved to 0 would tie with
    # theirs and make them branch 1).
    ([0.0, 0.0, 1.0, 1.0], 3, [2, 2, 0, 0]),
    # every value equal: all to the lightest branch
    ([0.3] * 5, 4, [3] * 5),
    ([0.7], 2, [1]),
])
def test_adm_hand_derived_cases(values, M, want):
    mine, ref = _both(values, M)
    assert mine == want  # the independent loop agrees with the hand derivation
    assert ref == want


# A slowly converging M = 2 case (found by a search over point masses): 22 Lloyd steps to
# converge, so the "20 steps in all" limit decides its labels; a limit of 19 or 21 steps in
# all gives other labellings (checked below), so an off-by-one in the step count fails.
_SLOW_POS = [0.0, 0.2521, 0.2858, 0.2947, 0.3037, 0.3121, 0.318, 0.3466, 0.4085, 0.4201, 0.4299, 0.437, 0.4497,
             0.4752, 0.5529, 0.5585, 0.5667, 0.5807, 0.5921, 0.6134, 0.6326, 0.8586, 0.8862, 1.0]
_SLOW_MASS = [20, 1, 1, 1, 1, 2, 17, 2, 3, 2, 2, 3, 24, 2, 2, 2, 2, 3, 3, 4, 1, 2, 4, 20]


def test_adm_step_limit_decides_a_slow_case():
    v = np.repeat(np.array(_SLOW_POS, dtype=np.float32), _SLOW_MASS)
    labels, steps = _adm_lloyd(v, 2, max_steps=100)
    assert steps == 22
    twenty, steps = _adm_lloyd(v, 2)
    assert steps == 19  # 20 steps in all: the first (single-centre) step and 19 Lloyd updates
    for other in (19, 21):
        assert not np.array_equal(_adm_lloyd(v, 2, max_steps=other)[0], twenty)
    assert reference.adm_ref(torch.from_numpy(v), 2).tolist() == twenty.tolist()


def _family(kind: str, n: int, g: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return g.random(n)
    if kind == "mixture":  # a few clumps of different spread: several local optima
        centres, spreads = g.random(4), g.random(4) * 0.2
        pick = g.integers(0, 4, n)
        return centres[pick] + spreads[pick] * g.standard_normal(n)
    if kind == "eighths":  # exact binary fractions: exact distance ties and repeated values
        return g.integers(0, 9, n) / 8
    if kind == "skewed":  # most pixels light, a heavy tail (what a trained classifier gives)
        return g.beta(0.3, 3.0, n)
    return np.exp(3 * g.standard_normal(n))  # "lognormal": a range over many octaves


@pytest.mark.parametrize("kind", ["uniform", "mixture", "eighths", "skewed", "lognormal"])
@pytest.mark.parametrize("M", [2, 3, 4, 5])
def test_adm_matches_independent_lloyd_loop(kind, M):
    g = np.random.default_rng()  # fresh inputs on every run; the failing ones are printed
    for n in (1, 2, 7, 64, 1000, 5000):
        v = _family(kind, n, g).astype(np.float32)
        mine, ref = _both(v.tolist(), M)
        assert mine == ref, f"{kind} M={M} n={n}: values {v.tolist()[:50]}"


@settings(max_examples=300, deadline=None, database=None)
@given(values=st.lists(st.floats(0, 1, width=32) | st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.75, 1.0]),
                       min_size=1, max_size=60),
       M=st.integers(2, 5))
def test_adm_matches_independent_lloyd_loop_fuzzed(values, M):
    mine, ref = _both(values, M)
    assert mine == ref


def test_adm_orders_well_separated_clusters():
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.rand(50, generator=g) * 0.1, 0.5 + torch.rand(50, generator=g) * 0.1,
                   0.9 + torch.rand(50, generator=g) * 0.1])
    got = reference.adm_ref(v, 3)
    assert got[:50].eq(2).all() and got[50:100].eq(1).all() and got[100:].eq(0).all()


def test_refine_leaves_border_and_heavy_pixels():
    g = torch.Generator().manual_seed(1)
    sr = torch.rand(1, 3, 6, 7, generator=g)
    classes = torch.randint(0, 2, (1, 6, 7), generator=g)
    out = reference.refine_ref(sr, classes, 2)
    assert torch.equal(out[..., 0, :], sr[..., 0, :]) and torch.equal(out[..., -1], sr[..., -1])
    heavy = (classes == 0)[:, None].expand_as(sr)
    assert torch.equal(out[heavy], sr[heavy])
    # a light interior pixel touching a heavy one takes its 3x3 mean
    c = torch.ones(1, 6, 7, dtype=torch.int64)
    c[0, 2, 3] = 0
    out = reference.refine_ref(sr, c, 2)
    torch.testing.assert_close(out[0, :, 2, 4], sr[0, :, 1:4, 3:6].mean((1, 2)))
    assert torch.equal(out[0, :, 4, 5], sr[0, :, 4, 5])  # not touching: unchanged
