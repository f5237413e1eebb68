"""``pcsr bench --e2e`` runs, checks before it times, and writes well-formed rows with the
paper's and the executed FLOPs (tiny sizes, random weights; no timing is asserted); the
executed-FLOP rules on layers whose counts are known by hand."""
from __future__ import annotations

import csv

import pytest
import torch
import torch.nn as nn

from pcsr import cli
from pcsr.backbones import FSRCNN
from pcsr.model import PCSR, SRModel
from pcsr.real_flops import count_real_flops, mlp_real_flops, network_real_flops, pcsr_real_flops

ARGS = ["--e2e", "--sizes", "64x48", "--variants", "fsrcnn,carn", "--device", "cpu", "--weights", "random",
        "--precisions", "ieee,bf16", "--batch", "1,2", "--repeat", "2", "--min-repeat", "2"]


@pytest.fixture(scope="module")
def e2e_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    path, md = out / "e2e.csv", out / "e2e.md"
    assert cli.main(["bench", *ARGS, "--csv", str(path), "--markdown", str(md)]) == 0
    compare = __import__("pcsr.bench", fromlist=["load_compare"]).load_compare()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == compare.CSV_FIELDS
        return list(reader), md.read_text()


def test_e2e_rows_pair_pcsr_with_its_original(e2e_rows):
    rows, _ = e2e_rows
    # 2 variants x 2 precisions x 2 batches, PCSR and original each
    assert len(rows) == 16 and {r["op"] for r in rows} == {"e2e_fps"}
    for r in rows:
        assert r["mode"] == "eager" and r["precision"] in ("ieee", "bf16") and r["batch"] in ("1", "2")
        ms, fps = float(r["median_ms"]), float(r["fps"])
        assert ms > 0 and fps == pytest.approx(int(r["batch"]) / (ms / 1e3), rel=1e-3)
    for pcsr_row, orig_row in zip(rows[::2], rows[1::2]):
        assert pcsr_row["backend"] == "cpu" and orig_row["backend"] == "torch"
        assert pcsr_row["model"].endswith("-PCSR") and not orig_row["model"].endswith("-PCSR")
        for key in ("variant", "precision", "batch", "size"):
            assert pcsr_row[key] == orig_row[key]
        assert float(pcsr_row["time_ratio"]) == pytest.approx(
            float(pcsr_row["median_ms"]) / float(orig_row["median_ms"]), rel=2e-3)
        assert float(pcsr_row["flops_ratio"]) == pytest.approx(
            float(pcsr_row["gflops"]) / float(orig_row["gflops"]), rel=2e-3)
        assert float(pcsr_row["real_flops_ratio"]) == pytest.approx(
            float(pcsr_row["gflops_real"]) / float(orig_row["gflops_real"]), rel=2e-3)


def test_e2e_shows_fsrcnn_paper_and_real_flops_apart(e2e_rows):
    """The paper charges FSRCNN's deconvolution 16x its work: its paper count is far above
    its real one, and FSRCNN-PCSR's paper ratio far below its real ratio."""
    rows, md = e2e_rows
    f = [r for r in rows if r["variant"] == "fsrcnn" and r["batch"] == "1" and r["precision"] == "ieee"]
    pcsr_row, orig_row = f
    assert float(orig_row["gflops"]) > 4 * float(orig_row["gflops_real"])
    assert float(pcsr_row["flops_ratio"]) < 0.6 < 1.0 < float(pcsr_row["real_flops_ratio"])
    assert "real" in md and "| fsrcnn |" in md


def test_e2e_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit, match="--precisions must be one of"):
        cli.main(["bench", "--e2e", "--sizes", "64x48", "--device", "cpu", "--precisions", "fp8"])
    with pytest.raises(SystemExit, match="--batch sizes must be >= 1"):
        cli.main(["bench", "--e2e", "--sizes", "64x48", "--device", "cpu", "--batch", "0"])


# --- executed FLOPs ------------------------------------------------------------------------

def test_real_flops_of_layers_by_hand():
    conv = nn.Conv2d(8, 4, 3, padding=1, groups=2)
    assert count_real_flops(conv, (1, 8, 5, 6)) == 2 * 9 * 4 * (4 * 5 * 6)
    deconv = nn.ConvTranspose2d(56, 3, 9, stride=4, padding=3, output_padding=1)
    # real: every input element times a 9x9 patch per output channel; the paper's rule
    # charges 16x as much (per output element, stride 4)
    assert count_real_flops(deconv, (1, 56, 10, 12)) == 2 * 81 * 3 * 56 * 10 * 12
    assert count_real_flops(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.PReLU()), (2, 3, 4, 4)) \
        == 2 * 3 * 4 * 32 + 4 * 32


def test_real_flops_of_fsrcnn_and_pcsr():
    net = FSRCNN(d=56, s=12, m=4, scale=4)
    h, w = 10, 12
    n = h * w
    body = 2 * (25 * 3 * 56 + 56 * 12 + 4 * 9 * 12 * 12 + 12 * 56) * n + (56 + 12 + 12 + 56) * n  # convs + PReLUs
    tail = 2 * 81 * 3 * 56 * n
    assert network_real_flops(SRModel("fsrcnn", dict(d=56, s=12, m=4, scale=4)), (1, 3, h, w)) == body + tail
    # first MLP layer split at LR: D*w1 per LR pixel, 4*w1 per HR pixel, the rest per HR pixel
    assert mlp_real_flops([52, 74, 74, 3], n_hr=160, n_lr=10) == 2 * (48 * 74 * 10 + 4 * 74 * 160
                                                                     + 74 * 74 * 160 + 74 * 3 * 160)
    torch.manual_seed(0)
    m = PCSR("fsrcnn", dict(d=16, s=8, m=2), [[20] * 2, [6] * 2], []).eval()
    classes = torch.tensor([[[0, 1, 1, 0], [1, 1, 0, 1]]])  # 3 heavy, 5 light HR pixels from 1x2 LR
    got = pcsr_real_flops(m, (1, 3, 1, 2), classes)
    want = (count_real_flops(m.backbone, (1, 3, 1, 2)) + mlp_real_flops([20, 2], 8, 2)
            + mlp_real_flops([20, 20, 20, 3], 3, 2) + mlp_real_flops([20, 6, 6, 3], 5, 2))
    assert got == want
