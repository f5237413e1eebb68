"""How far tiled output is from whole-image output, per model and routing mode.

    python benchmarks/tiling_exactness.py                       # demo_LRx4.png, tiles of 64
    python benchmarks/tiling_exactness.py --tile 48 --crop 128x160

Models: the bundled ones and, when ``../shared/reference/official-pcsr`` holds them, the
authors' phase-1 checkpoints. For each: whole image (``model(lr)``) against
``pcsr.tiling.upscale(..., tile=T)`` at k=0 with refinement and with ADM. Columns: max
|difference| over all pixels; max |difference| away from pixels whose class differs (and
their 3x3 neighbours, which refinement mixes); how many classes differ; the largest
whole-image decision margin among them (k: gap between the two best scores; ADM: the
heavy mass's distance to the nearest pixel of the other class).

The coordinate tables are exact values rounded once (``pcsr_kernels/geometry.py``), the
same for a tile as for the whole image, so the difference left is the tiling's own.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import pcsr
import pcsr_kernels
from pcsr import tiling
from pcsr.imageio import read_image

OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "official-pcsr"


def _margin(model, lr, scale, whole_cls, diff, adaptive) -> float:
    feat = model._inference_backbone()(model.normalise(lr))
    H, W = whole_cls.shape[-2:]
    probs = pcsr_kernels.classify(feat, (H, W), model.classifier.flat_params())
    if adaptive:
        s = probs[..., : model.num_heavy].sum(-1)[0]
        heavy = whole_cls[0] < model.num_heavy
        lo, hi = s[~heavy].max(), s[heavy].min()
        return float(torch.minimum((s - lo).abs(), (s - hi).abs())[diff[0]].max())
    top2 = torch.log(probs).topk(2, dim=-1).values
    return float((top2[..., 0] - top2[..., 1])[diff].max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=str(OFFICIAL / "demo_LRx4.png"))
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--crop", help="HxW crop from the top-left corner")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lr = read_image(args.image)
    if args.crop:
        h, w = (int(v) for v in args.crop.split("x"))
        lr = lr[:, :, :h, :w]
    models = [("bundled fsrcnn", "fsrcnn"), ("bundled carn", "carn")]
    models += [(f"authors' {f}", str(OFFICIAL / f)) for f in ("fsrcnn-pcsr-phase1.pth", "carn-pcsr-phase1.pth")
               if (OFFICIAL / f).exists()]
    p = tiling.plan(pcsr.load("fsrcnn"), lr.shape, 4, tile=args.tile)
    backend = pcsr_kernels.backend.resolved_name("cpu")
    print(f"{Path(args.image).name} {lr.shape[-1]}x{lr.shape[-2]} -> x4, tiles of {args.tile} LR pixels "
          f"({len(p.ys)}x{len(p.xs)}), backend {backend}\n")
    print("| model | routing | max abs diff | max abs diff away from class flips | classes differing | "
          "largest margin at a flip | seconds (whole, tiled) |")
    print("|---|---|---|---|---|---|---|")
    for label, src in models:
        model = pcsr.load(src)
        for mode, kw in (("k=0, refine", dict(k=0.0)), ("ADM, refine", dict(adaptive=True))):
            t0 = time.perf_counter()
            whole, whole_cls = model(lr, scale=4, **kw)
            t1 = time.perf_counter()
            sr, cls = tiling.upscale(model, lr, 4, tile=args.tile, **kw)
            t2 = time.perf_counter()
            diff = cls.long() != whole_cls
            near = F.max_pool2d(diff.float()[:, None], 3, 1, 1)[:, 0] > 0
            err = (sr - whole).abs().amax(1)
            n = int(diff.sum())
            margin = f"{_margin(model, lr, 4, whole_cls, diff, kw.get('adaptive', False)):.2g}" if n else "-"
            print(f"| {label} | {mode} | {float(err.max()):.2g} | {float(err[~near].max()):.2g} | "
                  f"{n} of {diff.numel()} | {margin} | {t1 - t0:.1f}, {t2 - t1:.1f} |")


if __name__ == "__main__":
    main()
