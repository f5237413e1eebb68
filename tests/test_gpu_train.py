"""scripts/gpu_train.sh, the prepared device call, run on the CPU at tiny size: both
variants from their bundled weights, phase 0 then phase 1 from packs, bf16 autocast,
checkpoints in $OUT, at most the 8 files the device tool returns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pcsr import checkpoint as ckpt
from pcsr.data import find_images, write_pack

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_train_script_runs_on_cpu_at_tiny_size(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    pack = tmp_path / "p.pack"
    write_pack(find_images([imgs]), pack, 32, 8)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), DEVICE="cpu", PYTHON=sys.executable, PACK0=str(pack), PACK1=str(pack),
               CROP="32", QUERIES="64", BATCH="2", ITERS0="6", ITERS1="4", BUDGET="300", SAVE_EVERY="3",
               THREADS="1", AMP="bf16", OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh")], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8, files  # what the device tool brings back
    assert "summary.txt" in files
    for v in ("fsrcnn", "carn"):
        log = [json.loads(line) for line in (out / v / "log.jsonl").read_text().splitlines()]
        assert [(x["phase"], x["step"]) for x in log if x["event"] == "phase_done"][-2:] == [(0, 6), (1, 4)]
        assert all(x["images_per_s"] > 0 for x in log if x["event"] == "train")
        new, old = ckpt.load(out / v / "model.safetensors"), ckpt.load(v)
        assert new.checkpoint_info["amp"] == "bf16"
        changed = [k for k, t in new.state_dict().items() if not torch.equal(t, old.state_dict()[k])]
        assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("classifier.") for k in changed)
