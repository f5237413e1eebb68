"""The routing of the bundled sample image: heavy fraction and sub-pixel dither, per model.

    python benchmarks/sample_routing.py                       # bundled fsrcnn and carn (+ authors' if present)
    python benchmarks/sample_routing.py --models fsrcnn old.safetensors --figure docs/sample_routing.png

For each model: ``model(sample, scale=4, k=0)`` and its class map. Columns: the fraction of
HR pixels routed to a heavy branch; the same on the flat parts of the image (LR pixels
whose 3x3 neighbourhood varies by less than 2/255, grown to HR); and the **phase share**:
of the variance of the heavy/light indicator, the part explained by the sub-pixel phase
``(y mod s, x mod s)`` alone. A classifier that follows image content has a phase share
near 0; one that keys on the relative coordinate draws a period-``s`` dither, whose phase
share approaches 1 on flat regions. ``--figure`` writes the class maps side by side
(heavy red over the output, light green), each with its model's name in the file's order.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

import pcsr
from pcsr.imageio import classes_picture, read_image, write_image

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT.parent / "shared" / "reference" / "official-pcsr"
SAMPLE = ROOT / "python" / "pcsr" / "assets" / "sample.png"


def phase_share(heavy: torch.Tensor, s: int, mask: torch.Tensor | None = None) -> float:
    """Share of the variance of ``heavy [H, W]`` (0/1) over the pixels of ``mask`` (all by
    default) explained by the phase (y mod s, x mod s): between-phase variance / total."""
    x = heavy.double()
    mask = torch.ones_like(heavy, dtype=torch.bool) if mask is None else mask
    vals = x[mask]
    total = float(vals.var(unbiased=False)) if vals.numel() else 0.0
    if total == 0.0:
        return 0.0
    ys = torch.arange(x.shape[0])[:, None] % s
    xs = torch.arange(x.shape[1])[None, :] % s
    phase = (ys * s + xs).expand_as(x)[mask]  # [n] phase index of each masked pixel
    n = torch.bincount(phase, minlength=s * s).double()
    mean = torch.bincount(phase, weights=vals, minlength=s * s) / n.clamp(min=1)
    between = float((n * (mean - vals.mean()) ** 2).sum() / n.sum())
    return between / total


def flat_mask(lr: torch.Tensor, s: int, tol: float = 2 / 255) -> torch.Tensor:
    """HR pixels whose LR pixel's 3x3 neighbourhood spans less than ``tol`` in every channel."""
    hi = F.max_pool2d(lr, 3, 1, 1)
    lo = -F.max_pool2d(-lr, 3, 1, 1)
    flat = ((hi - lo) < tol).all(dim=1)[0]  # [h, w]
    return flat.repeat_interleave(s, 0).repeat_interleave(s, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", help="bundled names or checkpoint paths (default: fsrcnn, carn, "
                    "and the authors' phase-1 checkpoints when ../shared has them)")
    ap.add_argument("--image", default=str(SAMPLE))
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--figure", help="write the class maps side by side here")
    ap.add_argument("--figure-scale", type=float, default=1.0, help="resize each panel by this factor (area filter)")
    args = ap.parse_args()
    models = args.models or ["fsrcnn", "carn"] + [str(OFFICIAL / f) for f in
                                                  ("fsrcnn-pcsr-phase1.pth", "carn-pcsr-phase1.pth")
                                                  if (OFFICIAL / f).exists()]
    lr = read_image(args.image)  # [1, 3, h, w]
    s = args.scale
    flat = flat_mask(lr, s)
    print(f"{Path(args.image).name} {lr.shape[-1]}x{lr.shape[-2]} x{s}, k = 0, refinement on; "
          f"flat: {float(flat.float().mean()):.1%} of the pixels")
    print("| model | heavy | heavy on flat parts | phase share | phase share on flat parts |")
    print("|---|---:|---:|---:|---:|")
    panels = []
    for name in models:
        m = pcsr.load(name)
        with torch.no_grad():
            sr, cls = m(lr, scale=s, k=0.0)
        heavy = cls[0] < m.num_heavy  # [H, W]
        hf = heavy[flat]
        flat_phase = phase_share(heavy, s, flat) if bool(flat.any()) else float("nan")
        print(f"| {Path(name).name} | {float(heavy.float().mean()):.1%} | "
              f"{float(hf.float().mean()) if hf.numel() else float('nan'):.1%} | "
              f"{phase_share(heavy, s):.3f} | {flat_phase:.3f} |")
        panel = classes_picture(cls[0], m.num_branches, sr[0].clamp(0, 1))  # [3, H, W]
        if args.figure_scale != 1.0:
            panel = F.interpolate(panel[None], scale_factor=args.figure_scale, mode="area")[0]
        panels.append(panel)
    if args.figure:
        gap = torch.ones(3, panels[0].shape[1], 8)
        row = [p for panel in panels for p in (panel, gap)][:-1]
        lossy = Path(args.figure).suffix.lower() in (".jpg", ".jpeg", ".webp")
        write_image(args.figure, torch.cat(row, dim=-1)[None], quality=80 if lossy else None)
        print(f"wrote {args.figure} ({', '.join(Path(n).name for n in models)}, left to right)")


if __name__ == "__main__":
    main()
