"""The recipe's details that decide what the classifier learns, and the GPU training path's
pieces on the CPU: L_avg against the authors' term, frozen modules in eval mode through
validation, the L_avg target share, scale augmentation, packs of tiles, bf16 autocast,
--reinit, --time-budget and resuming a capped phase.

Tiny runs (crops of 16-32 HR pixels, a few steps) on images generated here; seconds in all.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pcsr import checkpoint as ckpt
from pcsr.cli import main as cli_main
from pcsr.data import CropSampler, DataError, find_images, load_images, read_pack, write_pack
from pcsr.recipe import PhaseNet, phase_loss, set_phase
from train_cases import tiny_cfg, write_images
from pcsr.train import MODEL_FILE, STATE_FILE, TrainConfig, TrainError, build_model, read_state, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("data"))


_cfg = tiny_cfg


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# --- L_avg ----------------------------------------------------------------------------------------

def test_l_avg_is_the_authors_two_branch_term():
    # The authors (train_pcsr.py): loss_avg = |sum p_heavy - N/2| / (N/2), weight 3.
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(4, 100, 2) * 2, dim=-1)
    pred, gt = torch.rand(4, 100, 3), torch.rand(4, 100, 3)
    _, parts = phase_loss(pred, probs, gt, TrainConfig(data=[], out=""))
    n = probs[..., 0].numel()
    want = (probs[..., 0].sum() - n / 2).abs() / (n / 2)
    assert parts["l_avg"] == pytest.approx(float(want), rel=1e-6)


def test_heavy_share_moves_the_l_avg_target():
    probs = torch.full((2, 50, 2), 0.5)
    pred = gt = torch.zeros(2, 50, 3)
    assert phase_loss(pred, probs, gt, TrainConfig(data=[], out=""))[1]["l_avg"] == 0
    # heavy mass 0.5 N against a target of 0.3 N: |0.2 N| / (N / 2) = 0.4
    cfg = TrainConfig(data=[], out="", heavy_share=0.3)
    assert phase_loss(pred, probs, gt, cfg)[1]["l_avg"] == pytest.approx(0.4)
    probs3 = torch.tensor([0.3, 0.2, 0.5]).expand(2, 50, 3)  # 3 branches: heavy = branches 0 and 1
    l3 = phase_loss(pred, probs3, gt, cfg)[1]["l_avg"]
    # targets (0.15, 0.15, 0.7) N; deviations 0.15 + 0.05 + 0.2 = 0.4 N; / 2 / (N / 3)
    assert l3 == pytest.approx(0.4 / 2 * 3)


def test_heavy_share_is_validated(data_dir, tmp_path):
    with pytest.raises(TrainError, match="--heavy-share"):
        train(_cfg(data_dir, tmp_path / "o", heavy_share=1.0))


# --- frozen modules -------------------------------------------------------------------------------

def test_validation_leaves_the_frozen_backbone_in_eval_mode(data_dir, tmp_path):
    # CARN's BatchNorm: validation every step of phase 1 must not put the frozen backbone
    # back into training mode (batch statistics, running statistics updated).
    out = tmp_path / "run"
    train(_cfg(data_dir, out, variant="carn", iters=[2, 3], lr=1e-2, val=[str(data_dir)], val_every=1, val_crop=32))
    p0 = ckpt.load(out / "phase0.safetensors").state_dict()
    p1 = ckpt.load(out / "phase1.safetensors").state_dict()
    stats = [k for k in p0 if k.startswith("backbone.") and ("running_" in k)]
    assert stats
    for k in stats:
        assert torch.equal(p0[k], p1[k]), k
    model = build_model(_cfg(data_dir, out, variant="carn"))
    set_phase(model, 1)
    from pcsr.recipe import predict_phase

    predict_phase(model, torch.rand(1, 3, 8, 8), 4, 1)
    assert not model.backbone.training and model.classifier.training and model.upsamplers[1].training


# --- data -----------------------------------------------------------------------------------------

def test_rescale_crops_are_reduced_quantised_and_repeatable(data_dir):
    imgs = load_images(find_images([data_dir]), 32)
    a = CropSampler(imgs, 16, 4, None, torch.Generator().manual_seed(1), rescale=[0.5]).batch(3)
    b = CropSampler(imgs, 16, 4, None, torch.Generator().manual_seed(1), rescale=[0.5]).batch(3)
    assert torch.equal(a.gt, b.gt) and a.gt.shape == (3, 256, 3)
    assert torch.equal(a.gt, (a.gt * 255).round() / 255)  # 8-bit, as the authors' saved copies
    plain = CropSampler(imgs, 16, 4, None, torch.Generator().manual_seed(1)).batch(3)
    # a crop reduced 2x holds twice the detail per pixel: more variation between neighbours
    tv = lambda g: (g.reshape(3, 16, 16, 3).diff(dim=2).abs().mean())  # noqa: E731
    assert tv(a.gt) > tv(plain.gt)
    with pytest.raises(DataError, match="rescale"):
        CropSampler(imgs, 16, 4, None, torch.Generator(), rescale=[1.5])


def test_pack_round_trip_and_training_from_it(data_dir, tmp_path):
    pack = tmp_path / "t.pack"
    man = write_pack(find_images([data_dir]), pack, 32, 12, seed=4)
    assert man["count"] == 12 and sum(s["tiles"] for s in man["sources"]) == 12
    tiles = read_pack(pack)
    assert len(tiles) == 12 and tiles[0].shape == (3, 32, 32) and tiles[0].dtype == torch.uint8
    # every tile is a crop of one of the images, cut where the seeded draws say
    imgs = load_images(find_images([data_dir]), 32)
    gen = torch.Generator().manual_seed(4)
    area = torch.tensor([float(im.shape[1] * im.shape[2]) for im in imgs], dtype=torch.float64)
    for t in tiles:
        i = int(torch.multinomial(area / area.sum(), 1, generator=gen))
        y = int(torch.randint(imgs[i].shape[1] - 31, (1,), generator=gen))
        x = int(torch.randint(imgs[i].shape[2] - 31, (1,), generator=gen))
        assert torch.equal(t, imgs[i][:, y:y + 32, x:x + 32])
    assert write_pack(find_images([data_dir]), tmp_path / "s.pack", 32, 12, max_bytes=70_000)["count"] < 12
    assert find_images([pack]) == [pack]
    model = train(_cfg(pack, tmp_path / "run", iters=[2, 2]))
    assert (tmp_path / "run" / MODEL_FILE).is_file() and model.num_branches == 2
    (tmp_path / "bad.pack").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable pack"):
        read_pack(tmp_path / "bad.pack")


# --- bf16, reinit, time budget --------------------------------------------------------------------

def test_bf16_autocast_keeps_the_sum_and_loss_in_float32():
    model = build_model(TrainConfig(data=[], out=""))
    torch.manual_seed(0)
    lr = torch.rand(2, 3, 8, 8)
    from pcsr.data import hr_coord

    coord = hr_coord(32, 32).expand(2, -1, -1)
    cell = torch.full((2, 1024, 2), 2 / 32)
    set_phase(model, 1)
    ref, p_ref = PhaseNet(model, 1)(lr, coord, cell)
    got, p_got = PhaseNet(model, 1, amp=torch.bfloat16)(lr, coord, cell)
    assert got.dtype == torch.float32 and p_got.dtype == torch.float32
    # bf16 keeps 8 bits: the residual and probabilities carry about 2^-8 relative error,
    # while the bilinear base (the bulk of the value) is exact
    assert (got - ref).abs().max() < 0.02 and (p_got - p_ref).abs().max() < 0.02
    assert (got - ref).abs().max() > 0  # autocast did run in bf16


def test_reinit_gives_the_named_modules_fresh_seeded_weights(data_dir, tmp_path):
    out = tmp_path / "a"
    first = train(_cfg(data_dir, out, iters=[2, 2]))
    cfg = dict(variant=None, init=str(out / MODEL_FILE), phases=[1], iters=[0, 0], reinit=["classifier"], seed=9)
    a = train(_cfg(data_dir, tmp_path / "b", **cfg))
    b = train(_cfg(data_dir, tmp_path / "c", **cfg))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k  # repeatable from the seed
        same = torch.equal(v, first.state_dict()[k])
        assert same != k.startswith("classifier."), k  # only the classifier is new
    with pytest.raises(TrainError, match="unknown module"):
        train(_cfg(data_dir, tmp_path / "d", **{**cfg, "reinit": ["head"]}))
    with pytest.raises(TrainError, match="needs --init"):
        train(_cfg(data_dir, tmp_path / "e", reinit=["classifier"]))


def test_time_budget_caps_the_phase_and_resume_goes_on_from_the_cap(data_dir, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data_dir, out, phases=[0], iters=[10 ** 6, 10 ** 6], time_budget=2.0, save_every=10 ** 9,
               log_every=10 ** 9))
    capped = [r for r in _log(out) if r["event"] == "time_budget"]
    assert len(capped) == 1 and capped[0]["phase"] == 0 and 25 <= capped[0]["iters"] < 10 ** 6
    done = [r for r in _log(out) if r["event"] == "phase_done"]
    assert done[-1]["step"] == capped[0]["iters"]
    info = read_state(out / STATE_FILE)[0]
    assert info["phase_iters"] == capped[0]["iters"] == info["step"]
    # phase 1 from the capped phase 0: phase 0 is not continued up to its --iters
    train(_cfg(data_dir, out, phases=[1], iters=[10 ** 6, 5], resume=True, save_every=10 ** 9))
    log = _log(out)
    steps0 = [r["step"] for r in log if r["event"] == "train" and r["phase"] == 0]
    assert max(steps0) == capped[0]["iters"]
    assert [r["step"] for r in log if r["event"] == "phase_done" and r["phase"] == 1] == [5]


def test_time_budget_stops_on_time_when_the_machine_slows_down(data_dir, tmp_path, monkeypatch):
    """The cap is set from the rate of the first steps; if the steps then take longer (a
    fake clock: fast for the measured steps, then 30 s per reading), the run stops at the
    deadline, resumable, instead of running to the cap."""
    import pcsr.train as train_module

    clock = {"t": 1000.0, "calls": 0}

    def fake_perf_counter():
        clock["calls"] += 1
        clock["t"] += 0.05 if clock["calls"] < 400 else 30.0
        return clock["t"]

    monkeypatch.setattr(train_module.time, "perf_counter", fake_perf_counter)
    out = tmp_path / "run"
    train(_cfg(data_dir, out, phases=[0], iters=[10 ** 6, 10 ** 6], time_budget=600.0, save_every=10 ** 9,
               log_every=10 ** 9))
    monkeypatch.undo()
    log = _log(out)
    cap = [r for r in log if r["event"] == "time_budget"][0]["iters"]
    stopped = [r for r in log if r["event"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["step"] < cap and stopped[0]["step"] % 10 == 0
    assert not [r for r in log if r["event"] == "phase_done"]
    info = read_state(out / STATE_FILE)[0]
    assert info["step"] == stopped[0]["step"] and info["phase_iters"] == cap  # --resume finishes the schedule


def test_cli_flags_of_the_gpu_path(data_dir, tmp_path):
    out = tmp_path / "cli"
    assert cli_main(["train", str(data_dir), "--out", str(out), "--crop", "16", "--queries", "16", "--batch", "2",
                     "--iters", "2", "2", "--amp", "bf16", "--rescale", "--no-phase-files", "--heavy-share", "0.45",
                     "--no-progress", "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["log.jsonl", MODEL_FILE, STATE_FILE]
    start = _log(out)[0]
    assert start["amp"] == "bf16" and start["rescale"] == [1.0, 0.9, 0.8, 0.7, 0.6] and start["heavy_share"] == 0.45
    info = ckpt.load(out / MODEL_FILE).checkpoint_info
    assert info["heavy_share"] == 0.45 and info["amp"] == "bf16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_crops_made_on_the_gpu_equal_the_cpu_ones(data_dir):
    imgs = load_images(find_images([data_dir]), 32)
    a = CropSampler(imgs, 32, 4, 64, torch.Generator().manual_seed(2), rescale=[1.0, 0.7]).batch(4)
    b = CropSampler(imgs, 32, 4, 64, torch.Generator().manual_seed(2), device="cuda", rescale=[1.0, 0.7]).batch(4)
    assert b.lr.is_cuda
    torch.testing.assert_close(b.lr.cpu(), a.lr, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.gt.cpu(), a.gt, atol=1 / 255 + 1e-6, rtol=0)  # rounding to 8 bits may differ
    assert torch.equal(b.coord.cpu(), a.coord)
