"""The PCSR module: inference through the op, the training forward, tiles, cost, FLOPs."""
import subprocess
import sys

import pytest
import torch

from pcsr import flops
from pcsr.memory import TooLargeError
from pcsr.model import PCSR, SRModel
from pcsr_kernels.geometry import liif_coord


def _model(M=2, backbone="fsrcnn", args=None, seed=0):
    torch.manual_seed(seed)
    return PCSR(backbone, args or {"d": 8, "s": 4, "m": 1}, [[16, 16], [8], [6], [4]][:M], [6]).eval()


def _grid(H, W, B):
    coord = torch.stack(torch.meshgrid(liif_coord(H), liif_coord(W), indexing="ij"), -1).view(1, H * W, 2).expand(B, -1, -1)
    cell = torch.tensor([2 / H, 2 / W]).view(1, 1, 2).expand(B, H * W, 2)
    return coord, cell


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_training_forward_equals_inference_when_routing_is_certain(branch):
    """With a classifier forced to one branch, the soft mixture is that branch: the training
    path (grid_sample inputs) and the inference op must then give the same image."""
    m = _model(M=3)
    with torch.no_grad():
        last = m.classifier.layers[-1]
        last.weight.zero_()
        last.bias.fill_(-1e4)
        last.bias[branch] = 1e4
    lr = torch.rand(2, 3, 5, 7)
    sr, classes = m(lr, scale=3, refine=False)
    assert classes.eq(branch).all()
    coord, cell = _grid(15, 21, 2)
    pred, probs, preds = m.forward_train(lr, coord, cell)
    assert probs.shape == (2, 315, 3) and preds.shape == (2, 315, 3, 3)
    torch.testing.assert_close(pred.permute(0, 2, 1).reshape(2, 3, 15, 21), sr, rtol=1e-5, atol=1e-5)


def test_training_forward_has_gradients_everywhere():
    m = _model(M=2).train()
    lr = torch.rand(2, 3, 6, 6)
    coord, cell = _grid(12, 12, 2)
    pred, probs, _ = m.forward_train(lr, coord[:, ::7], cell[:, ::7])
    (pred.abs().mean() + probs[..., 0].mean()).backward()
    assert all(p.grad is not None for p in m.parameters())


def test_cost_vector_follows_authors_rule():
    m = _model(M=2, backbone="carn", args={"nf": 52})
    backbone = flops.count_flops(m.backbone, torch.zeros(1, 3, 16, 16))
    heavy = flops.mlp_flops(m.upsamplers[0].widths, 64 * 64)
    light = flops.mlp_flops(m.upsamplers[1].widths, 64 * 64)
    expect = torch.tensor([backbone + heavy, backbone + light], dtype=torch.float32)
    torch.testing.assert_close(m.cost(4), expect / expect.sum())
    assert m.cost(4)[0] > m.cost(4)[1]


def test_scales_and_out_size():
    m = _model(M=2)
    lr = torch.rand(1, 3, 7, 5)
    for s in (2, 3, 2.5, 3.7):
        sr, classes = m(lr, scale=s)
        assert sr.shape == (1, 3, round(7 * s), round(5 * s)) and classes.shape == (1, round(7 * s), round(5 * s))
    sr, _ = m(lr, out_size=(20, 9))
    assert sr.shape == (1, 3, 20, 9)
    with pytest.raises(ValueError, match="exactly one of scale and out_size"):
        m(lr)
    with pytest.raises(ValueError, match=r"lr must be an RGB batch \[B, 3, h, w\], got \(3, 7, 5\)"):
        m(lr[0], scale=2)
    with pytest.raises(ValueError, match="lr is empty"):
        m(lr[:, :, :0], scale=2)


def test_forward_tiled_equals_the_whole_image_and_keeps_its_old_conventions():
    """forward_tiled is tiling.upscale under the old calling convention (progress(n) per
    tile, int64 classes, stride/batch accepted); tiles.py tests exactness in depth."""
    m = _model(M=2)
    lr = torch.rand(1, 3, 40, 37)
    whole, whole_cls = m(lr, scale=2)
    ticks = []
    tiled, classes = m.forward_tiled(lr, 2, tile=16, stride=12, batch=4, progress=ticks.append)
    assert classes.dtype == torch.int64 and classes.shape == (1, 80, 74)
    assert ticks == [1] * 9  # 3 x 3 tiles of 16 LR pixels (the last ones smaller)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    assert torch.equal(classes, whole_cls)


def test_forward_refuses_what_cannot_fit_before_allocating():
    """A 30000x30000 input (a stride-0 view: no memory behind it) needs hundreds of GB at
    x4; forward must say so with the bytes, not start allocating."""
    m = _model(M=2)
    huge = torch.zeros(1, 3, 1, 1).expand(1, 3, 30000, 30000)
    with pytest.raises(TooLargeError, match=r"1x3x30000x30000 -> 120000x120000 .* needs about [\d.]+ [GT]B .*bytes"):
        m(huge, scale=4)
    lr = torch.rand(1, 3, 20, 20)
    with pytest.raises(TooLargeError, match=r"more than|available"):
        m(lr, scale=4, max_memory=1 << 20)
    sr, _ = m(lr, scale=4, max_memory=1 << 30)
    assert sr.shape == (1, 3, 80, 80)


def test_flops_count_every_branch_on_its_pixels():
    m = _model(M=3)
    lr = torch.rand(1, 3, 6, 6)
    _, classes = m(lr, scale=2)
    n = torch.bincount(classes.flatten(), minlength=3).tolist()
    expect = flops.count_flops(m.backbone, lr) + flops.mlp_flops(m.classifier.widths, 144)
    expect += sum(flops.mlp_flops(u.widths, c) for u, c in zip(m.upsamplers, n))
    assert m.flops(lr.shape, classes) == expect


def test_batchnorm_folding_does_not_change_outputs():
    m = _model(M=2, backbone="carn", args={"nf": 16})
    m.train()
    m.backbone(torch.rand(4, 3, 8, 8))  # give BatchNorm non-trivial running statistics
    m.eval()
    lr = torch.rand(1, 3, 6, 7)
    sr, cls = m(lr, scale=2)
    feat = m.backbone(m.normalise(lr))
    feat_folded = m._inference_backbone()(m.normalise(lr))
    torch.testing.assert_close(feat_folded, feat, rtol=1e-5, atol=1e-5)
    assert "_folded" not in "".join(m.state_dict())


def test_original_model_upscales():
    m = SRModel("carn", {"nf": 16, "scale": 2}).eval()
    out = m(torch.rand(1, 3, 6, 7))
    assert out.shape == (1, 3, 12, 14)


def test_works_without_the_compiled_extension():
    """Block the extension's import: the package still imports, says why, and the reference
    path answers through torch.ops.pcsr."""
    code = r"""
import sys, warnings
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pcsr_kernels._C":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
import torch, pcsr_kernels
assert not pcsr_kernels.extension_loaded() and "blocked" in pcsr_kernels.extension_error()
dump = torch._C._dispatch_dump("pcsr::route_upsample")  # schema and backend choice from Python, no CPU kernel
assert "pcsr_kernels/ops.py" in dump.split("debug:")[1].splitlines()[0] and "\nCPU:" not in dump, dump
try:
    with pcsr_kernels.use_backend("cpu"):
        pcsr_kernels.refine(torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64), 2)
    raise SystemExit("an unavailable backend was not refused")
except RuntimeError as e:
    assert "pcsr backend 'cpu' is not available for cpu tensors" in str(e), e
from pcsr.model import PCSR
m = PCSR("fsrcnn", {"d": 8, "s": 4, "m": 1}, [[8], [4]], []).eval()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    sr, c = m(torch.rand(1, 3, 5, 6), scale=2)
print(sr.shape, [str(x.message) for x in w])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "torch.Size([1, 3, 10, 12])" in r.stdout
    assert "pip install --no-build-isolation -e ." in r.stdout  # the warning says how to build it
