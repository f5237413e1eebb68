"""The reference path is the specification: check it against a direct, per-pixel statement
of the method written independently here (full coordinate grid, grid_sample lookups, the
authors' unfold refinement), on small random problems."""
import pytest
import torch
import torch.nn.functional as F

from conftest import random_problem
from pcsr.model import make_mlp_input
from pcsr_kernels import reference
from pcsr_kernels.geometry import Tables, bilinear_axis, liif_coord


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


def test_adm_two_clusters_follows_authors_kmeans():
    """A hand-made case: the authors' M=2 K-means from centres (mean, 0)."""
    v = torch.tensor([0.0, 0.05, 0.1, 0.12, 0.8, 0.9, 1.0, 0.95, 0.15, 0.6])
    got = reference.adm_ref(v, 2)
    # Lloyd converges to {<= 0.15} vs {>= 0.6}: high values heavy (branch 0).
    assert got.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]


def test_adm_is_deterministic_and_ordered_for_more_branches():
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.rand(50, generator=g) * 0.1, 0.5 + torch.rand(50, generator=g) * 0.1,
                   0.9 + torch.rand(50, generator=g) * 0.1])
    got = reference.adm_ref(v, 3)
    assert torch.equal(got, reference.adm_ref(v, 3))
    assert got[:50].eq(2).all() and got[50:100].eq(1).all() and got[100:].eq(0).all()
    # constant input: everything to the lightest branch
    assert reference.adm_ref(torch.full((10,), 0.3), 4).eq(3).all()


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
