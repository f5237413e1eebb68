"""The benchmark and trade-off commands run and write well-formed CSV and PNG files
(tiny sizes, random weights; no timing is asserted)."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch
from PIL import Image

from pcsr import cli, save
from pcsr.model import PCSR, SRModel

from conftest import REPO

pytest.importorskip("matplotlib")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_side=200):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert min(im.size) >= min_side


def _floats(row, *keys):
    return [float(row[k]) for k in keys]


@pytest.fixture(scope="module")
def bench_csv(tmp_path_factory):
    """One tiny ``pcsr bench`` run (FSRCNN-PCSR, 64x48 output, one timed round)."""
    out = tmp_path_factory.mktemp("bench")
    path = out / "bench.csv"
    md = out / "bench.md"
    rc = cli.main(["bench", "--sizes", "64x48", "--variants", "fsrcnn", "--device", "cpu", "--weights", "random",
                   "--repeat", "1", "--min-repeat", "1", "--csv", str(path), "--markdown", str(md)])
    assert rc == 0
    return path, md


def test_bench_writes_csv_rows(bench_csv):
    path, md = bench_csv
    compare = __import__("pcsr.bench", fromlist=["load_compare"]).load_compare()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == compare.CSV_FIELDS
        rows = list(reader)
    ops = {(r["op"], r["backend"]) for r in rows}
    assert ("e2e", "torch") in ops and ("e2e", "reference") in ops  # the original and the pure-PyTorch path
    assert ("backbone", "torch") in ops and ("route_upsample", "reference") in ops
    assert {"classify", "route", "route_adm", "upsample", "refine"} <= {r["op"] for r in rows}
    for r in rows:
        med, p20, p80 = _floats(r, "median_ms", "p20_ms", "p80_ms")
        assert med > 0 and p20 <= med <= p80
        assert r["variant"] == "fsrcnn" and r["size"] == "64x48" and (r["height"], r["width"]) == ("48", "64")
        assert r["device"] == "cpu" and r["torch"] == torch.__version__ and r["commit"]
    for r in rows:
        if r["op"] == "e2e":
            assert float(r["gflops"]) > 0 and float(r["gflop_per_s"]) > 0 and float(r["peak_mb"]) >= 0
            assert float(r["time_ratio"]) > 0 and 0 < float(r["flops_ratio"]) <= 1.5
    text = md.read_text()
    assert "| variant | output | path |" in text and "FSRCNN (original)" in text


def test_plot_ratio_writes_png(bench_csv, tmp_path):
    path, _ = bench_csv
    png = tmp_path / "ratio.png"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plot_ratio.py"), str(path), "-o", str(png)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    _check_png(png)


def test_plot_ratio_without_ratios_fails_cleanly(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("op,backend,variant,size,device,device_name,k,adaptive,refine,time_ratio,flops_ratio\n")
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plot_ratio.py"), str(empty), "-o",
                          str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "no end-to-end" in res.stderr
    assert not (tmp_path / "x.png").exists()


def test_bench_rejects_unknown_size():
    with pytest.raises((SystemExit, ValueError)):
        cli.main(["bench", "--sizes", "3k", "--variants", "fsrcnn", "--device", "cpu"])


def test_sweep_writes_csv_and_pngs(tmp_path):
    torch.manual_seed(0)
    model = PCSR("fsrcnn", dict(d=16, s=8, m=2), [[16] * 2, [8]], [])
    original = SRModel("fsrcnn", dict(d=16, s=8, m=2, scale=4))
    save(model, tmp_path / "tiny-pcsr.safetensors")
    save(original, tmp_path / "tiny-x4.safetensors")
    y, x = torch.meshgrid(torch.linspace(0, 1, 52), torch.linspace(0, 1, 70), indexing="ij")
    hr = torch.stack([x, y, (torch.sin(12 * x) * torch.cos(9 * y) + 1) / 2])  # [3, 52, 70], not a multiple of 4
    Image.fromarray((hr.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / "hr.png")
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["sweep", str(tmp_path / "hr.png"), "--model", str(tmp_path / "tiny-pcsr.safetensors"),
                   "--original", str(tmp_path / "tiny-x4.safetensors"), "--k", "-1", "0", "2", "--repeat", "1",
                   "--device", "cpu", "--out-dir", str(out), "--prefix", "tiny_"])
    assert rc == 0
    with open(out / "tiny_sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    points = [r["point"] for r in rows if not r["image"].startswith("mean")]
    assert points == ["bicubic", "original", "k=-1", "k=0", "k=2", "ADM"]
    assert [r["point"] for r in rows if r["image"].startswith("mean")] == points
    for r in rows:
        assert float(r["psnr"]) > 5 and float(r["gflops"]) >= 0 and float(r["seconds"]) > 0
        assert (r["height"], r["width"]) in (("52", "68"), ("", ""))  # centre-cropped to a multiple of 4
    gf = {r["point"]: float(r["gflops"]) for r in rows if r["image"] == "hr.png"}
    assert gf["k=2"] <= gf["k=0"] <= gf["k=-1"]  # larger k, fewer heavy pixels
    for name in ("tiny_psnr_vs_gflops.png", "tiny_psnr_vs_time.png"):
        _check_png(out / name)


def test_sweep_rejects_a_plain_model_as_pcsr(tmp_path, capsys):
    save(SRModel("fsrcnn", dict(d=8, s=4, m=1, scale=4)), tmp_path / "plain.safetensors")
    Image.new("RGB", (32, 32)).save(tmp_path / "hr.png")
    rc = cli.main(["sweep", str(tmp_path / "hr.png"), "--model", str(tmp_path / "plain.safetensors"),
                   "--out-dir", str(tmp_path)])
    assert rc == 2 and "not a PCSR model" in capsys.readouterr().err


def test_microbenchmarks_check_and_report_every_op(tmp_path):
    """`pytest benchmarks/ --benchmark-only` at a tiny size: every CPU microbenchmark checks
    its op against the reference before timing it, and one group per op and variant is
    reported (CUDA ones skip without a GPU)."""
    import json

    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "benchmarks"),
           "--benchmark-only", "--bench-size", "64x48", "--bench-rounds", "1",
           "--bench-variants", "fsrcnn", f"--benchmark-json={out}"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    groups = {b["group"] for b in json.loads(out.read_text())["benchmarks"]}
    ops = ["classify", "sort", "route", "route ADM", "upsample", "refine", "route_upsample k=0",
           "route_upsample ADM"]
    assert groups == {f"{op} FSRCNN-PCSR 64x48" for op in ops}
    names = {b["name"] for b in json.loads(out.read_text())["benchmarks"]}
    assert "test_upsample[fsrcnn-cpu-cpu]" in names and "test_upsample[fsrcnn-reference-cpu]" in names


def test_sweep_labels_merge_points_that_coincide():
    from pcsr.sweep import _k_labels

    def pt(k, g, db):
        return {"point": f"k={k:g}", "k": k, "gflops": g, "psnr": db}
    ks = [pt(5, 37.25, 44.40), pt(3, 37.25, 44.40), pt(2, 37.26, 44.44), pt(1, 37.56, 44.97), pt(0, 81.5, 46.37)]
    points = ks + [{"point": "original", "gflops": 359.8, "psnr": 45.68}, {"point": "bicubic", "gflops": 0.0, "psnr": 42.67}]
    labels = [text for _, text in _k_labels(ks, points, "gflops", 1.0)]
    assert labels == ["k=2, 3, 5", "k=1", "k=0"]
    # spread-out points keep a label each
    assert len(_k_labels(ks[3:], ks[3:], "gflops", 1.0)) == 2
