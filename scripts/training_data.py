"""Make the bundled models' training data reproducible: export scikit-image's sample
photographs and render a set of synthetic flat-shaded ("low-poly") vector-art images.

    python scripts/training_data.py --out data/   # -> data/skimage/, data/synthetic/

Why synthetic images: the photographs at hand (`../shared/data/train`, scikit-image's
samples) are textured (bicubic x4 reaches 24-33 dB on them), while much of what users
upscale, and the wallpapers of `../shared/data/large`, is rendered art: flat or smoothly
shaded regions split by long, clean, anti-aliased edges of low contrast, where bicubic is
already at 40-46 dB and every remaining decibel is at the edges. An L1 loss over textured
crops spends almost all of a small compute budget on texture no small model can restore.
The synthetic set supplies the missing kind of image; its style (triangulated facets over
smooth colour gradients, large overlapping shapes, soft glows) imitates that family of
wallpapers, which the model card says plainly. Every image is drawn by this script from a
seed, so the data carry no third-party licence.

Rendering: each image is drawn with Pillow at ``--supersample`` times its size and reduced
with a box filter (area averaging), which anti-aliases every edge as a renderer would.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SKIMAGE_PHOTOS = ("rocket", "hubble_deep_field", "retina", "immunohistochemistry", "coffee")
SKIMAGE_VAL = ("astronaut", "chelsea")


def export_skimage(out: Path, names) -> list[Path]:
    from skimage import data

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        arr = getattr(data, name)()
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        p = out / f"{name}.png"
        Image.fromarray(arr[..., :3].astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def _gradient_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth colour field [h, w, 3] in 0..255: a few coloured anchors blended by distance."""
    n = int(rng.integers(2, 5))
    anchors = rng.uniform(0, 1, (n, 2)) * (h, w)
    hue = rng.uniform(0, 1)
    cols = []
    for _ in range(n):
        h_ = (hue + rng.normal(0, 0.12)) % 1.0
        s_ = rng.uniform(0.2, 0.9)
        v_ = rng.uniform(0.25, 1.0)
        cols.append(_hsv(h_, s_, v_))
    cols = np.array(cols)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wsum = np.zeros((h, w), np.float32)
    acc = np.zeros((h, w, 3), np.float32)
    scale = max(h, w) * rng.uniform(0.3, 0.8)
    for (ay, ax), c in zip(anchors, cols):
        wt = np.exp(-((yy - ay) ** 2 + (xx - ax) ** 2) / (2 * scale ** 2)) + 1e-6
        wsum += wt
        acc += wt[..., None] * c
    return acc / wsum[..., None]


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (255 * r, 255 * g, 255 * b)


def _facets(draw: ImageDraw.ImageDraw, rng: np.random.Generator, field: np.ndarray, mask_poly=None,
            cell: float = 60.0, contrast: float = 8.0) -> None:
    """Triangulate a jittered grid over the canvas and fill each triangle with the field's
    colour at its centroid plus a small random shift (the low-poly look)."""
    H, W = field.shape[:2]
    ny, nx = math.ceil(H / cell) + 3, math.ceil(W / cell) + 3  # the grid overhangs every side
    gy = (np.arange(ny)[:, None] * cell + rng.uniform(-0.35, 0.35, (ny, nx)) * cell) - cell
    gx = (np.arange(nx)[None, :] * cell + rng.uniform(-0.35, 0.35, (ny, nx)) * cell) - cell
    for i in range(ny - 1):
        for j in range(nx - 1):
            a, b = (gx[i, j], gy[i, j]), (gx[i, j + 1], gy[i, j + 1])
            c, d = (gx[i + 1, j], gy[i + 1, j]), (gx[i + 1, j + 1], gy[i + 1, j + 1])
            tris = [(a, b, d), (a, d, c)] if rng.uniform() < 0.5 else [(a, b, c), (b, d, c)]
            for t in tris:
                cy = min(max(int(sum(p[1] for p in t) / 3), 0), H - 1)
                cx = min(max(int(sum(p[0] for p in t) / 3), 0), W - 1)
                col = field[cy, cx] + rng.normal(0, contrast, 3) + rng.normal(0, contrast)
                draw.polygon(t, fill=tuple(int(v) for v in np.clip(col, 0, 255)))


def _blob(rng: np.random.Generator, H: int, W: int) -> list[tuple[float, float]]:
    """A large shape: a mountain-like polyline closed along an edge, or a jagged polygon."""
    if rng.uniform() < 0.5:
        base = rng.uniform(0.5, 1.1) * H
        xs = np.sort(rng.uniform(-0.1, 1.1, int(rng.integers(3, 9)))) * W
        ys = base - rng.uniform(0.15, 0.9, xs.size) * H
        pts = [(-0.1 * W, base)] + list(zip(xs, ys)) + [(1.1 * W, base), (1.1 * W, 1.2 * H), (-0.1 * W, 1.2 * H)]
        return [(float(x), float(y)) for x, y in pts]
    cy, cx = rng.uniform(0, H), rng.uniform(0, W)
    n = int(rng.integers(5, 14))
    r0 = rng.uniform(0.1, 0.5) * min(H, W)
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    rad = r0 * rng.uniform(0.5, 1.3, n)
    return [(float(cx + r * math.cos(a)), float(cy + r * math.sin(a))) for a, r in zip(ang, rad)]


def render(seed: int, size: int, supersample: int = 3) -> Image.Image:
    """One synthetic image of ``size`` x ``size`` pixels."""
    rng = np.random.default_rng(seed)
    S = size * supersample
    field = _gradient_field(rng, S, S)
    img = Image.new("RGB", (S, S))
    draw = ImageDraw.Draw(img)
    _facets(draw, rng, field, cell=rng.uniform(0.04, 0.15) * S, contrast=rng.uniform(1, 6))
    for _ in range(int(rng.integers(1, 5))):  # overlapping shapes, each with its own facets
        layer_field = _gradient_field(rng, S, S)
        layer = Image.new("RGB", (S, S))
        _facets(ImageDraw.Draw(layer), rng, layer_field, cell=rng.uniform(0.03, 0.12) * S,
                contrast=rng.uniform(1, 8))
        mask = Image.new("L", (S, S), 0)
        poly = _blob(rng, S, S)
        ImageDraw.Draw(mask).polygon(poly, fill=255)
        if rng.uniform() < 0.35:  # a glow: a blurred band around the shape
            glow = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.01, 0.04) * S))
            colour = Image.new("RGB", (S, S), tuple(int(v) for v in _hsv(rng.uniform(), 0.8, 1.0)))
            img = Image.composite(colour, img, glow.point(lambda v: int(v * 0.6)))
        if rng.uniform() < 0.3:  # an outline of another colour
            outline = Image.new("L", (S, S), 0)
            ImageDraw.Draw(outline).line(poly + poly[:1], fill=255, width=int(rng.uniform(0.004, 0.02) * S) + 1)
            colour = Image.new("RGB", (S, S), tuple(int(v) for v in _hsv(rng.uniform(), 0.7, 0.9)))
            img = Image.composite(colour, img, outline)
        img = Image.composite(layer, img, mask)
    return img.resize((size, size), Image.Resampling.BOX)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (skimage/, skimage_val/, synthetic/ inside)")
    p.add_argument("--synthetic", type=int, default=64, help="number of synthetic images (default 64)")
    p.add_argument("--size", type=int, default=1024, help="side of each synthetic image (default 1024)")
    p.add_argument("--supersample", type=int, default=3, help="render at this many times the size (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first synthetic image (default 0)")
    p.add_argument("--no-skimage", action="store_true", help="do not export scikit-image's photographs")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.no_skimage:
        export_skimage(out / "skimage", SKIMAGE_PHOTOS)
        export_skimage(out / "skimage_val", SKIMAGE_VAL)
    syn = out / "synthetic"
    syn.mkdir(parents=True, exist_ok=True)
    for i in range(args.synthetic):
        render(args.seed + i, args.size, args.supersample).save(syn / f"synthetic_{args.seed + i:04d}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
