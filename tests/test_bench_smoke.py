"""The benchmark and trade-off commands run and write well-formed CSV and PNG files
(tiny sizes, random weights; no timing is asserted)."""
from __future__ import annotations

import csv
import datetime
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


BENCH_ARGS = ["--sizes", "64x48", "--variants", "fsrcnn", "--device", "cpu", "--weights", "random",
              "--heavy-fraction", "0.5"]


@pytest.fixture(scope="module")
def bench_csv(tmp_path_factory):
    """One tiny ``pcsr bench`` run (FSRCNN-PCSR, 64x48 output, three timed rounds)."""
    out = tmp_path_factory.mktemp("bench")
    path = out / "bench.csv"
    md = out / "bench.md"
    rc = cli.main(["bench", *BENCH_ARGS, "--repeat", "3", "--min-repeat", "3", "--csv", str(path),
                   "--markdown", str(md)])
    assert rc == 0
    return path, md


def _rows(path):
    compare = __import__("pcsr.bench", fromlist=["load_compare"]).load_compare()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == compare.CSV_FIELDS
        return list(reader)


def _head() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                           timeout=30)
    except OSError:
        r = None
    if r is None or r.returncode != 0:
        pytest.skip("not a git checkout: the commit stamp cannot be checked")
    return r.stdout.strip()


def test_bench_rows_carry_every_provider_and_their_stamps(bench_csv):
    rows = _rows(bench_csv[0])
    # every path available on a CPU, end to end; per stage the fused op of each PCSR path
    # and the separate ops of each backend (the authors' loop has no separate ops)
    e2e = {r["backend"]: r for r in rows if r["op"] == "e2e"}
    assert set(e2e) == {"torch", "cpu", "reference", "official"}
    stages = {(r["op"], r["backend"]) for r in rows if r["op"] != "e2e"}
    want = {("backbone", "torch")} | {("route_upsample", b) for b in ("cpu", "reference", "official")}
    want |= {(op, b) for op in ("classify", "route", "route_adm", "upsample", "refine") for b in ("cpu", "reference")}
    assert stages == want and len(rows) == len(want) + len(e2e)  # one row each, no duplicate
    head = _head()
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 -- the bench stamps "" when triton does not import
        triton_version = ""
    now = datetime.datetime.now(datetime.timezone.utc)
    for r in rows:
        assert r["variant"] == "fsrcnn" and r["size"] == "64x48" and (r["height"], r["width"]) == ("48", "64")
        assert r["device"] == "cpu" and r["device_name"] and r["weights"] == "random"
        assert r["torch"] == torch.__version__ and r["triton"] == triton_version
        assert r["commit"] in (head, head + "+dirty"), (r["commit"], head)
        stamp = datetime.datetime.strptime(r["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
        assert abs((now - stamp).total_seconds()) < 3600
        assert (r["k"], r["adaptive"], r["refine"]) == ("0.0", "0", "1")
        assert r["n"] == "3"  # exactly the rounds asked for (--repeat 3 --min-repeat 3)
        assert float(r["p20_ms"]) > 0 and float(r["median_ms"]) > 0


def test_bench_numbers_are_consistent(bench_csv):
    """Derived columns recomputed from the primary ones, and FLOPs counted two ways."""
    rows = _rows(bench_csv[0])
    e2e = {r["backend"]: r for r in rows if r["op"] == "e2e"}
    by = {(r["op"], r["backend"]): r for r in rows}
    orig = e2e.pop("torch")
    assert (orig["time_ratio"], orig["flops_ratio"]) == ("1.0000", "1.0000")
    fused = float(by[("route_upsample", "cpu")]["gflops"])
    # the fused op's GFLOPs (classifier on every pixel + each pixel's branch) are those of
    # the separate classify and upsample ops
    parts = float(by[("classify", "cpu")]["gflops"]) + float(by[("upsample", "cpu")]["gflops"])
    assert fused == pytest.approx(parts, abs=2e-4)
    for b, r in e2e.items():
        med, gflops = float(r["median_ms"]), float(r["gflops"])
        assert float(r["time_ratio"]) == pytest.approx(med / float(orig["median_ms"]), rel=1e-3, abs=1e-4), b
        assert float(r["flops_ratio"]) == pytest.approx(gflops / float(orig["gflops"]), rel=1e-3, abs=1e-4), b
        assert float(r["gflop_per_s"]) == pytest.approx(gflops / (med / 1e3), rel=1e-2, abs=1e-2), b
        # end to end = the backbone (module hooks, model.flops) + the upsampling stage (pcsr.flops)
        assert gflops == pytest.approx(float(by[("backbone", "torch")]["gflops"]) + fused, abs=2e-4), b
        # random weights are calibrated so that half of the pixels go to the heavy branch at k = 0
        assert float(r["heavy_fraction"]) == pytest.approx(0.5, abs=0.05), b
        assert float(r["peak_mb"]) >= 0


def test_bench_markdown_has_a_row_per_provider(bench_csv):
    lines = bench_csv[1].read_text().splitlines()
    assert "| variant | output | path |" in lines[2]
    for path in ("FSRCNN (original)", "PCSR, cpu backend (C++)", "PCSR, pure PyTorch (reference)",
                 "PCSR, authors' loop (official_style)"):
        assert sum(line.startswith(f"| FSRCNN-PCSR | 64x48 (64x48) | {path} |") for line in lines) == 1, path
    for backend in ("cpu", "reference", "official"):
        assert sum(line.startswith(f"| FSRCNN-PCSR | 64x48 | {backend} |") for line in lines) == 1, backend
    assert not any("not timed" in line for line in lines)


def test_bench_does_not_time_a_wrong_kernel(tmp_path, monkeypatch, capsys):
    """The correctness check before timing: a cpu backend whose route_upsample is off by
    0.01 is reported as failing, and neither timed nor written to the CSV."""
    from pcsr_kernels import backend

    impls = dict(backend._impls["cpu"])
    right = impls["route_upsample"]

    def wrong(*args):
        sr, classes = right(*args)
        return sr + 0.01, classes

    monkeypatch.setitem(backend._impls, "cpu", {**impls, "route_upsample": wrong})
    path, md = tmp_path / "b.csv", tmp_path / "b.md"
    rc = cli.main(["bench", *BENCH_ARGS, "--providers", "cpu,reference,original", "--repeat", "1",
                   "--min-repeat", "1", "--csv", str(path), "--markdown", str(md)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "check cpu       crop 64x48: FAILED (class mismatch 0.0e+00, values off by > 1e-3: 1.0e+00" in err
    rows = _rows(path)
    assert not [r for r in rows if r["backend"] == "cpu"]
    assert {r["backend"] for r in rows if r["op"] == "e2e"} == {"torch", "reference"}
    assert "**cpu not timed**, failed the check (crop: class mismatch" in md.read_text()


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
