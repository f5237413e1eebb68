"""`torchrun --nproc_per_node 2 -m pcsr upscale IN -o OUT` on CPU (gloo): the folder is
split by file, every output is written exactly once and equals the single-process result,
finished outputs are skipped on a resumed run, and rank 0 prints one summary."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from pcsr import checkpoint
from pcsr.cli import main
from pcsr.model import PCSR


def test_torchrun_two_processes_match_one_and_resume(tmp_path, capsys):
    torch.manual_seed(0)
    model = tmp_path / "tiny.safetensors"
    checkpoint.save(PCSR("fsrcnn", {"d": 8, "s": 4, "m": 1}, [[12, 12], [6]], [5]), model)
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray((rng.random((9 + i, 12, 3)) * 255).astype(np.uint8)).save(src / f"im{i}.png")

    ref = tmp_path / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process runs (OMP_NUM_THREADS=1)
    try:
        assert main(["upscale", str(src), "-o", str(ref), "--model", str(model), "--scale", "3"]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()

    # a run that stopped after two images: those are kept as they are
    out = tmp_path / "out"
    out.mkdir()
    for name in ("im1.png", "im4.png"):
        shutil.copy2(ref / name, out / name)
    kept = {n: os.stat(out / n) for n in ("im1.png", "im4.png")}

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pcsr", "upscale", str(src), "-o", str(out), "--model", str(model), "--scale", "3", "--skip-existing"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]

    written = re.findall(r"^\[rank (\d)\] \S+/(im\d\.png) -> ", r.stdout, flags=re.M)
    names = sorted(n for _, n in written)
    assert names == ["im0.png", "im2.png", "im3.png", "im5.png", "im6.png"], r.stdout  # each exactly once
    assert {rank for rank, _ in written} == {"0", "1"}  # both processes worked
    assert r.stdout.count("pcsr upscale: 5 written, 2 skipped (output exists), 0 failed") == 1
    for n, st in kept.items():
        now = os.stat(out / n)
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())  # no temp files
    for p in ref.iterdir():
        a, b = np.asarray(Image.open(p)), np.asarray(Image.open(out / p.name))
        assert np.array_equal(a, b), p.name


class _Rank1:
    """Rank 1 of 2, with rank 0's side of each gather given."""

    def __init__(self, rank0):
        self.world, self.rank, self.local_rank, self.active, self.main = 2, 1, 1, True, False
        self.rank0 = rank0

    def gather(self, obj):
        return [self.rank0, obj]

    def close(self):
        pass


def test_a_refused_plan_stops_every_rank_and_is_printed_once(tmp_path, monkeypatch, capsys):
    import pcsr.shard

    a = tmp_path / "a.png"
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(a)
    args = ["upscale", str(a), "-o", str(a)]
    monkeypatch.setattr(pcsr.shard, "Shard", lambda: _Rank1("rank 0's message"))
    assert main(args) == 2
    assert capsys.readouterr().err == ""  # rank 0 says it
    monkeypatch.setattr(pcsr.shard, "Shard", lambda: _Rank1(None))
    assert main(args) == 2  # only this rank saw a problem: it says so itself
    assert "would overwrite the input" in capsys.readouterr().err
    assert a.exists() and Image.open(a).size == (6, 5)
