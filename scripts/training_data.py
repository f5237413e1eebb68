"""Make the bundled models' training data reproducible: photographs and digital art from
Debian's wallpaper packages, scikit-image's sample photographs, and a set of synthetic
flat-shaded ("low-poly") vector-art images.

    python scripts/training_data.py --out data/
    # -> data/photos/, data/art/, data/val_photos/ (Debian), data/skimage/, data/skimage_val/,
    #    data/synthetic/

Debian images: ``apt-get download`` fetches each package (no root needed; the ``.deb`` files
are kept in ``<out>/debs/`` and reused), ``dpkg -x`` unpacks it, and every image listed in
:data:`DEBIAN_IMAGES` is converted to RGB and reduced with MATLAB-style bicubic
(``pcsr.imresize``, antialiased) so that its longer side is at most ``--max-side`` pixels
(default 2040, the width of the DIV2K images the authors trained on): the packages' photos
are 3-6K JPEGs from phones and cameras, soft and compression-noisy at full size, and
reduced to DIV2K's size they have DIV2K's sharpness per pixel. Only images whose licence,
as the package's ``debian/copyright`` states it, allows redistribution of derived works
are listed; the table records the licence and copyright holder of each. Images in
``val_photos/`` are held out: never trained on (validation and evaluation only). The three
Plasma wallpapers of ``../shared/data/large`` (Altai, Cascade, Honeywave) are evaluation
images and are never extracted.

Why synthetic images: the photographs are textured (bicubic x4 reaches 24-33 dB on them),
while much of what users upscale, and the wallpapers of `../shared/data/large`, is
rendered art: flat or smoothly shaded regions split by long, clean, anti-aliased edges of
low contrast, where bicubic is already at 40-46 dB and every remaining decibel is at the
edges. The synthetic set supplies that kind of image; its style (triangulated facets over
smooth colour gradients, large overlapping shapes, soft glows) imitates that family of
wallpapers, which the model card says plainly. Every image is drawn by this script from a
seed, so the data carry no third-party licence. Rendering: each image is drawn with Pillow
at ``--supersample`` times its size and reduced with a box filter (area averaging), which
anti-aliases every edge as a renderer would.
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SKIMAGE_PHOTOS = ("rocket", "hubble_deep_field", "retina", "immunohistochemistry", "coffee")
SKIMAGE_VAL = ("astronaut", "chelsea")


@dataclass(frozen=True)
class DebianImage:
    package: str  # Debian package (bookworm)
    path: str  # inside the package
    name: str  # output file stem
    licence: str  # SPDX-style, as debian/copyright gives it
    copyright: str
    kind: str  # "photo" -> photos/ (or val_photos/), "art" -> art/
    held_out: bool = False  # True: val_photos/, never trained on


_LOMIRI16 = "usr/share/backgrounds/"
_PLASMA = "usr/share/wallpapers/"
_MATE = "usr/share/backgrounds/mate/nature/"
_UKUI = "usr/share/backgrounds/"
_KDE_VDG = "2014 KDE Visual Design Group and the wallpapers' authors"

# Versions fetched when this table was made (Debian 12 "bookworm"); licences read from each
# package's /usr/share/doc/<package>/copyright. Skipped: gnome-backgrounds 43.1 (its
# copyright file attributes only the adwaita images, which are 3D renders; the other 43.x
# images have no per-file licence there), sway-backgrounds (the sway logo, Expat: not a
# photograph), mate-backgrounds' Garden, LadyBird and YellowFlower and the abstract images
# other than Elephants (not listed in its copyright file).
DEBIAN_PACKAGES = {
    "lomiri-wallpapers-16.04": "20.04.0-2", "lomiri-wallpapers-20.04": "20.04.0-2",
    "mate-backgrounds": "1.26.0-1", "ukui-wallpapers": "20.04.3-1.1",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
}
DEBIAN_IMAGES = (
    # lomiri-wallpapers-16.04: photographs from the Ubuntu Touch 16.04 wallpaper contest (2018)
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "aitzgorri_by_Aitzol_Berasategi.jpg", "aitzgorri",
                "CC-BY-4.0", "2018 Aitzol Berasategi", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "analogpattern_by_Peter_Nerlich.jpg", "analogpattern",
                "CC-BY-SA-4.0", "2018 Peter Nerlich", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "Bridge_by_Sander_Klootwijk.jpg", "bridge",
                "CC-BY-SA-4.0", "2018 Sander Klootwijk", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "Dragonfly_by_Bolly.jpg", "dragonfly",
                "CC-BY-SA-4.0", "2018 \"Bolly\"", "photo", held_out=True),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "free_by_Peter_Nerlich.jpg", "free",
                "CC-BY-SA-4.0", "2018 Peter Nerlich", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "friends_by_Aitzol_Berasategi.jpg", "friends",
                "CC-BY-4.0", "2018 Aitzol Berasategi", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "greentock_by_Peter_Nerlich.jpg", "greentock",
                "CC-BY-SA-4.0", "2018 Peter Nerlich", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "life_by_Aitzol_Berasategi.jpg", "life",
                "CC-BY-4.0", "2018 Aitzol Berasategi", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "picosdeeuropa_by_Aitzol_Berasategi.jpg", "picosdeeuropa",
                "CC-BY-4.0", "2018 Aitzol Berasategi", "photo", held_out=True),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "Picture_0B_by_freespace.jpg", "picture0b",
                "CC-BY-4.0", "2018 Trevor \"Freespace\"", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "Picture_1A_by_freespace.jpg", "picture1a",
                "CC-BY-4.0", "2018 Trevor \"Freespace\"", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "seeding_by_Clements_Engelhardt.jpg", "seeding",
                "CC0-1.0", "2018 Clemens Engelhardt", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "sunset_by_Aitzol_Berasategi.jpg", "sunset",
                "CC-BY-4.0", "2018 Aitzol Berasategi", "photo"),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "Wine_by_Jakkub_Mede.jpg", "wine",
                "CC-BY-4.0", "2018 Jakub Mede", "photo", held_out=True),
    DebianImage("lomiri-wallpapers-16.04", _LOMIRI16 + "umang_by_Abhishek_Mudgal.jpg", "umang",
                "CC-BY-4.0", "2018 Abhishek Mudgal", "art"),
    # lomiri-wallpapers-20.04
    DebianImage("lomiri-wallpapers-20.04", _LOMIRI16 + "Kleiber_by_Lukas_Baubkus.jpg", "kleiber",
                "CC-BY-SA-3.0", "2021 Lukas Baubkus", "photo"),
    DebianImage("lomiri-wallpapers-20.04", _LOMIRI16 + "Infinite-Sea_by_Aury88.jpg", "infinite_sea",
                "CC-BY-SA-3.0", "2019 Aury88", "art"),
    DebianImage("lomiri-wallpapers-20.04", _LOMIRI16 + "Fossa_by_Jasper_Roks.jpg", "fossa",
                "CC-BY-SA-3.0", "2023 Jasper Roks", "art"),
    DebianImage("lomiri-wallpapers-20.04", _LOMIRI16 + "Painting-Colors_by__herobrine7gamer.jpg", "painting_colors",
                "CC-BY-SA-3.0", "2021 HEROBRINE7GAMER", "art"),
    # mate-backgrounds: nature photographs
    DebianImage("mate-backgrounds", _MATE + "Aqua.jpg", "aqua", "GPL-2+", "2008 Charles Barbin", "photo"),
    DebianImage("mate-backgrounds", _MATE + "Blinds.jpg", "blinds", "GPL-2+", "2008 Lennart Poettering", "photo"),
    DebianImage("mate-backgrounds", _MATE + "Dune.jpg", "dune", "GPL-2+", "2007 Marco Cogoni", "photo"),
    DebianImage("mate-backgrounds", _MATE + "FreshFlower.jpg", "freshflower", "GPL-2+", "2005 Jens Ansorg", "photo"),
    DebianImage("mate-backgrounds", _MATE + "GreenMeadow.jpg", "greenmeadow", "GPL-2+", "2005 Timothy Schellhase",
                "photo"),
    DebianImage("mate-backgrounds", _MATE + "RainDrops.jpg", "raindrops", "GPL-2+",
                "2008 \"blackcombwhistler07\"", "photo"),
    DebianImage("mate-backgrounds", _MATE + "Storm.jpg", "storm", "GPL-2+", "2008 Sergey Nazarov", "photo",
                held_out=True),
    DebianImage("mate-backgrounds", _MATE + "TwoWings.jpg", "twowings", "GPL-2+", "2008 Charles Barbin", "photo"),
    DebianImage("mate-backgrounds", _MATE + "Wood.jpg", "wood", "GPL-2+", "2008 Jean-Francois Fortin Tam", "photo"),
    DebianImage("mate-backgrounds", "usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg", "elephants",
                "GPL-2+", "2020 Wyng Stancikaite", "art"),
    # plasma-workspace-wallpapers 5.27: the 11 photographs of ../shared/data/train, one more
    # photograph (Autumn) and the digital art, except Altai, Cascade and Honeywave (evaluation)
    *(DebianImage("plasma-workspace-wallpapers", f"{_PLASMA}{n}/contents/images/2560x1600.jpg", n.lower(), "GPL-2+",
                  _KDE_VDG, "photo")
      for n in ("Autumn", "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
                "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")),
    *(DebianImage("plasma-workspace-wallpapers", f"{_PLASMA}{n}/contents/images/{f}", n.lower(), "GPL-2+", _KDE_VDG,
                  "art")
      for n, f in (("Canopee", "3840x2160.png"), ("Cluster", "3840x2160.png"), ("Elarun", "2560x1600.png"),
                   ("Flow", "5120x2880.jpg"), ("FlyingKonqui", "2560x1600.png"), ("IceCold", "5120x2880.png"),
                   ("Kay", "5120x2880.png"), ("Kokkini", "3840x2160.png"), ("MilkyWay", "5120x2880.png"),
                   ("Opal", "3840x2160.png"), ("PastelHills", "3200x2000.jpg"), ("Patak", "5120x2880.png"),
                   ("SafeLanding", "5120x2880.jpg"), ("Shell", "5120x2880.jpg"), ("Volna", "5120x2880.jpg"))),
    # ukui-wallpapers: digital art, "Files: * ... CC-BY-SA-3.0"
    *(DebianImage("ukui-wallpapers", _UKUI + f, "ukui_" + f.rsplit(".", 1)[0].replace("-", "_"), "CC-BY-SA-3.0",
                  "2013-2020 Ubuntu Kylin community contributors", "art")
      for f in ("2004default.jpg", "calla.png", "city.png", "desert.png", "firstgeneration.jpg", "fluent-color.png",
                "focal-ubuntukylin.png", "goldfish.png", "rhythm.jpg", "rollpaper.png", "string.jpg",
                "the-mouse.jpg")),
)
EVALUATION_ONLY = ("Altai", "Cascade", "Honeywave")  # ../shared/data/large: never extracted


def _deb_file(debs: Path, package: str) -> Path:
    """The package's .deb in ``debs`` (downloaded with ``apt-get download`` when absent)."""
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    debs.mkdir(parents=True, exist_ok=True)
    version = DEBIAN_PACKAGES[package]
    for spec in (f"{package}={version}", package):  # the recorded version first, else the archive's
        r = subprocess.run(["apt-get", "download", spec], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if r.returncode == 0 and found:
            return found[-1]
    raise RuntimeError(f"apt-get download {package} failed: {r.stderr.strip()[-500:]}")


def reduce_to(img: Image.Image, max_side: int) -> Image.Image:
    """``img`` (RGB) with its longer side at most ``max_side``: MATLAB-style bicubic on the
    float image (as the LR of a training pair is made), rounded to 8 bits."""
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    import torch

    from pcsr.imresize import imresize

    s = max_side / max(w, h)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    y = imresize(x, size=size)[0].permute(1, 2, 0).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return Image.fromarray(y.numpy())


def export_debian(out: Path, debs: Path, max_side: int, images=DEBIAN_IMAGES) -> list[Path]:
    """Extract, reduce and write every image of ``images``; returns the written paths.
    ``<out>/LICENSES.tsv`` lists each output file with its source, licence and holder."""
    written, rows = [], []
    by_package: dict[str, list[DebianImage]] = {}
    for im in images:
        if any(f"/{e}/" in im.path for e in EVALUATION_ONLY):
            raise ValueError(f"{im.path}: an evaluation image, never trained on")
        by_package.setdefault(im.package, []).append(im)
    for package, items in by_package.items():
        deb = _deb_file(debs, package)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            for im in items:
                folder = out / ("val_photos" if im.held_out else "photos" if im.kind == "photo" else "art")
                folder.mkdir(parents=True, exist_ok=True)
                dst = folder / f"{im.name}.png"
                with Image.open(Path(tmp) / im.path) as src:
                    reduce_to(src.convert("RGB"), max_side).save(dst)
                written.append(dst)
                rows.append("\t".join((str(dst.relative_to(out)), deb.name, im.path, im.licence, im.copyright)))
    (out / "LICENSES.tsv").write_text("file\tpackage\tpath\tlicence\tcopyright\n" + "\n".join(rows) + "\n")
    return written


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
    p.add_argument("--no-debian", action="store_true", help="do not fetch Debian's wallpaper packages")
    p.add_argument("--debs", help="folder of downloaded .deb files (default <out>/debs)")
    p.add_argument("--max-side", type=int, default=2040,
                   help="reduce Debian images to at most this many pixels per side (default 2040, as DIV2K)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.no_debian:
        if shutil.which("dpkg-deb") is None:
            p.error("dpkg-deb not found (needed to unpack the Debian packages); pass --no-debian to skip them")
        export_debian(out, Path(args.debs) if args.debs else out / "debs", args.max_side)
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
