"""Tiny training runs shared by test_train.py and test_train_recipe.py: generated images and
a base configuration (crops of 16 HR pixels, 32 query pixels, a few steps)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pcsr.train import TrainConfig


def write_images(folder: Path, n: int = 3, size: int = 48, seed: int = 0) -> Path:
    """Smooth random colour fields plus a little texture: learnable, never constant."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.random((size // 8 + 1, size // 8 + 1, 3))
        img = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float64)
        img += rng.normal(0, 6, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def tiny_cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=[str(data)], out=str(out), variant="fsrcnn", crop=16, queries=32, batch=2, iters=[4, 3],
                seed=3, save_every=2, val_every=1000, log_every=1, progress=False, threads=1)
    base.update(kw)
    return TrainConfig(**base)
