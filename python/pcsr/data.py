"""Training data: random HR crops from folders of images, their MATLAB-bicubic LR, and
LIIF-style query pixels.

The authors' recipe (DESIGN.md §1): a 128x128 HR crop of a random image, its LR by
MATLAB-style bicubic (antialiased, a = -0.5) computed from the float crop, a random flip /
flip / transpose, and every HR pixel of the crop as a query. On a CPU the MLPs over all
16384 pixels of a crop dominate the step, so a random subset of the pixels can be drawn
instead (LIIF's ``sample_q``); the gradient stays unbiased.

Decoded images are kept in memory as uint8 (a 2560x1600 photo is 12 MB). Each LR crop is
computed on the fly from its HR crop, as the authors' loader does, so no LR copy of a
dataset is kept anywhere.

Randomness comes only from the ``torch.Generator`` passed in (a CPU generator, also when
the images live on a GPU), so a run is repeatable from a seed and resumes exactly from the
generator's saved state; each rank of a distributed run owns its own generator (its own
shard of crops). With ``device`` set, the images are kept on that device and the crops,
flips and the bicubic degradation run there: on a GPU the host then only draws a few
random integers per crop.

A *pack* (``.pack``, :func:`write_pack`) is a data set pre-cropped into tiles, made once
where the images are and carried to a machine that has no access to them (a GPU lent for
minutes, with a size limit on what travels): a zip of lossless PNG tiles drawn as the
sampler draws its crops (image in proportion to its area, position uniform), with a
``manifest.json`` naming the sources. Training reads a pack like a folder of images, each
tile one image.
"""
from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .imageio import ImageError, load_image
from .imresize import imresize

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
PACK_SUFFIX = ".pack"
PACK_FORMAT = "pcsr-pack"
PACK_VERSION = 1


class DataError(ValueError):
    """A data folder that cannot be trained on: missing, empty, no usable image."""


def find_images(folders: Sequence[str | os.PathLike]) -> list[Path]:
    """Every image file (or pack) directly inside each folder (sorted, so the order is
    repeatable); a file argument is taken as it is."""
    if not folders:
        raise DataError("no data folder given")
    out: list[Path] = []
    for f in folders:
        p = Path(f)
        if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix.lower() == PACK_SUFFIX):
            out.append(p)
            continue
        if not p.is_dir():
            raise DataError(f"{p}: no such folder")
        files = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        out += files
    return out


def load_images(paths: Sequence[Path], min_size: int) -> list[torch.Tensor]:
    """Decode ``paths`` to uint8 ``[3, H, W]`` tensors (a pack: one per tile), dropping (with
    a warning) images smaller than ``min_size`` on a side; fails when none is left or one is
    unreadable."""
    images, small = [], []
    for p in paths:
        if Path(p).suffix.lower() == PACK_SUFFIX:
            tiles = read_pack(p)
            if tiles and min(tiles[0].shape[-2:]) < min_size:
                small.append(f"{Path(p).name} (tiles of {tiles[0].shape[-1]}x{tiles[0].shape[-2]})")
            else:
                images += tiles
            continue
        try:
            rgb = load_image(p).rgb
        except ImageError as e:
            raise DataError(str(e)) from None
        if min(rgb.shape[-2:]) < min_size:
            small.append(f"{p.name} ({rgb.shape[-1]}x{rgb.shape[-2]})")
            continue
        images.append(rgb.mul(255).round_().to(torch.uint8))
    if small:
        msg = f"skipping {len(small)} image(s) smaller than the {min_size}x{min_size} crop: {', '.join(small)}"
        if not images:
            raise DataError(f"no image is large enough for the {min_size}x{min_size} crop: {', '.join(small)}")
        warnings.warn(msg, stacklevel=2)
    return images


@dataclass
class Batch:
    lr: torch.Tensor  # [B, 3, h, w] float32 in [0, 1] (MATLAB bicubic, not clamped)
    coord: torch.Tensor  # [B, Q, 2] HR pixel centres (y, x) in (-1, 1)
    cell: torch.Tensor  # [B, Q, 2] (2/H, 2/W)
    gt: torch.Tensor  # [B, Q, 3] HR colours of the query pixels


def hr_coord(H: int, W: int) -> torch.Tensor:
    """LIIF pixel-centre grid ``[H*W, 2]`` as (y, x), row-major."""
    from pcsr_kernels.geometry import liif_coord

    ys, xs = liif_coord(H), liif_coord(W)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)


class CropSampler:
    """Random training batches from a list of uint8 images.

    Args:
        images: uint8 ``[3, H, W]`` tensors, each at least ``crop`` on both sides.
        crop: HR crop side (a multiple of ``scale``).
        scale: integer downscaling factor for the LR.
        queries: query pixels per crop; ``None`` or ``>= crop**2`` means all of them.
        generator: the only source of randomness (CPU).
        device: where the images are kept and the batches made (default: the CPU). The
            batches are the same on every device, to float rounding.
        rescale: the authors' scale augmentation (their ``data_augmentation.py`` keeps
            every DIV2K image at 1, 0.9, 0.8, 0.7 and 0.6 of its size): each crop is cut
            at ``crop / s`` pixels and reduced to ``crop`` by MATLAB bicubic, rounded to
            8 bits as their saved images are, for ``s`` drawn from these factors in
            proportion to ``s**2`` (the area, hence the share of crops, each reduced copy
            has among theirs). ``None``: every crop at full size.
    """

    def __init__(self, images: list[torch.Tensor], crop: int, scale: int, queries: int | None,
                 generator: torch.Generator, device: torch.device | str | None = None,
                 rescale: Sequence[float] | None = None):
        if crop % scale:
            raise DataError(f"the crop ({crop}) must be a multiple of the scale ({scale})")
        if not images:
            raise DataError("no training images")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.images = [im.to(self.device) for im in images]
        self.crop, self.scale, self.gen = crop, scale, generator
        n = crop * crop
        self.queries = n if queries is None or queries <= 0 or queries >= n else int(queries)
        self.coord = hr_coord(crop, crop).to(self.device)  # [n, 2]
        # Draw images in proportion to their area, so every pixel of the set is equally
        # likely to be in a crop whatever the image sizes.
        area = torch.tensor([float(im.shape[1] * im.shape[2]) for im in images], dtype=torch.float64)
        self.weights = area / area.sum()
        self.rescale = _check_rescale(rescale)

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.gen))

    def crop_one(self) -> torch.Tensor:
        """One augmented HR crop ``[3, crop, crop]`` float32 in [0, 1]."""
        i = int(torch.multinomial(self.weights, 1, generator=self.gen))
        im = self.images[i]
        hr = _cut(im, self.crop, self.rescale, self.gen)
        flips = torch.rand(3, generator=self.gen) < 0.5
        if flips[0]:
            hr = hr.flip(-1)
        if flips[1]:
            hr = hr.flip(-2)
        if flips[2]:
            hr = hr.transpose(-1, -2)
        return hr.contiguous()

    def batch(self, size: int) -> Batch:
        hrs = torch.stack([self.crop_one() for _ in range(size)])  # [B, 3, c, c]
        c, h = self.crop, self.crop // self.scale
        lr = imresize(hrs, size=(h, h))  # [B, 3, h, h]
        flat = hrs.flatten(2).transpose(1, 2)  # [B, c*c, 3]
        n = c * c
        if self.queries < n:
            idx = torch.stack([torch.randperm(n, generator=self.gen)[:self.queries] for _ in range(size)])  # [B, Q]
            idx = idx.to(self.device)
            coord = self.coord[idx]
            gt = torch.gather(flat, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
        else:
            coord = self.coord.unsqueeze(0).expand(size, -1, -1)
            gt = flat
        cell = torch.tensor([2.0 / c, 2.0 / c], device=self.device).expand(size, coord.shape[1], 2)
        return Batch(lr.contiguous(), coord.contiguous(), cell.contiguous(), gt.contiguous())


def validation_pairs(paths: Sequence[Path], scale: int, max_side: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(lr [1,3,h,w], hr [1,3,H,W]) per image with the evaluation protocol (HR cropped to a
    multiple of the scale, LR = MATLAB bicubic of the float HR). ``max_side`` takes a centre
    crop of at most that many HR pixels per side first, to keep validation cheap."""
    from .evaluate import centre_crop

    pairs = []
    for p in paths:
        try:
            hr = load_image(p).rgb
        except ImageError as e:
            raise DataError(str(e)) from None
        if max_side:
            H, W = hr.shape[-2:]
            th, tw = min(H, max_side), min(W, max_side)
            top, left = (H - th) // 2, (W - tw) // 2
            hr = hr[:, top:top + th, left:left + tw]
        hr = centre_crop(hr, scale)[None]
        lr = imresize(hr, size=(hr.shape[-2] // scale, hr.shape[-1] // scale))
        pairs.append((lr, hr))
    return pairs


# --- scale augmentation -----------------------------------------------------------------------------

AUTHORS_RESCALE = (1.0, 0.9, 0.8, 0.7, 0.6)


def _check_rescale(rescale) -> tuple[float, ...] | None:
    if rescale is None:
        return None
    out = tuple(float(s) for s in rescale)
    if not out or not all(0 < s <= 1 for s in out):
        raise DataError(f"rescale factors must lie in (0, 1], got {list(rescale)}")
    return None if out == (1.0,) else out


def _cut(im: torch.Tensor, c: int, rescale: tuple[float, ...] | None, gen: torch.Generator) -> torch.Tensor:
    """A random ``c`` x ``c`` crop of the uint8 image ``im`` as float32 in [0, 1]; with
    ``rescale``, cut at ``c / s`` and reduced (see :class:`CropSampler`)."""
    side = c
    if rescale:
        w = torch.tensor([s * s for s in rescale], dtype=torch.float64)
        s = rescale[int(torch.multinomial(w, 1, generator=gen))]
        side = min(round(c / s), im.shape[1], im.shape[2])  # a small image: as much as it has
    y = int(torch.randint(im.shape[1] - side + 1, (1,), generator=gen))
    x = int(torch.randint(im.shape[2] - side + 1, (1,), generator=gen))
    hr = im[:, y:y + side, x:x + side].float().div_(255)
    if side != c:
        hr = imresize(hr, size=(c, c)).clamp_(0, 1).mul_(255).round_().div_(255)
    return hr


# --- packs ---------------------------------------------------------------------------------------

def write_pack(paths: Sequence[str | os.PathLike], out: str | os.PathLike, tile: int, count: int, seed: int = 0,
               max_bytes: int | None = None, note: str | None = None,
               rescale: Sequence[float] | None = None) -> dict:
    """Cut ``count`` tiles of ``tile`` x ``tile`` pixels from the images ``paths`` into the
    pack ``out`` (a zip of PNG tiles and ``manifest.json``), stopping early when the next
    tile would take the file past ``max_bytes``. Tiles are drawn as :class:`CropSampler`
    draws crops (an image in proportion to its area, a uniform position, the scale
    augmentation ``rescale`` if given; no flips: the sampler flips at training time) from a
    generator seeded with ``seed``, so a pack is reproducible from its sources. Returns the
    manifest."""
    from PIL import Image

    paths = [Path(p) for p in paths]
    images = load_images(paths, tile)
    names = [p.name for p in paths if p.suffix.lower() != PACK_SUFFIX]
    gen = torch.Generator().manual_seed(seed)
    area = torch.tensor([float(im.shape[1] * im.shape[2]) for im in images], dtype=torch.float64)
    weights = area / area.sum()
    used = [0] * len(images)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    size = 0
    n = 0
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for n in range(count):
            i = int(torch.multinomial(weights, 1, generator=gen))
            cut = _cut(images[i], tile, _check_rescale(rescale), gen).mul_(255).round_().to(torch.uint8)
            buf = io.BytesIO()
            Image.fromarray(cut.permute(1, 2, 0).numpy()).save(buf, format="PNG", compress_level=9)
            data = buf.getvalue()
            if max_bytes is not None and size + len(data) + 200 > max_bytes - 65536:
                break
            z.writestr(f"tiles/{n:06d}.png", data)
            size += len(data) + 100
            used[i] += 1
        else:
            n = count
        manifest = {"format": PACK_FORMAT, "version": PACK_VERSION, "tile": tile, "count": n, "seed": seed,
                    "rescale": list(rescale) if rescale else None,
                    "sources": [{"file": name, "tiles": u} for name, u in zip(names, used)] if len(names) == len(
                        images) else [{"file": str(p)} for p in paths]}
        if note:
            manifest["note"] = note
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
    os.replace(tmp, out)
    return manifest


def read_pack(path: str | os.PathLike) -> list[torch.Tensor]:
    """The tiles of a pack as uint8 ``[3, tile, tile]`` tensors, in order."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            if manifest.get("format") != PACK_FORMAT or manifest.get("version") != PACK_VERSION:
                raise DataError(f"{path}: not a {PACK_FORMAT} v{PACK_VERSION} file")
            t = int(manifest["tile"])
            names = sorted(n for n in z.namelist() if n.startswith("tiles/") and n.endswith(".png"))
            if len(names) != int(manifest["count"]):
                raise DataError(f"{path}: {len(names)} tiles, the manifest says {manifest['count']}")
            tiles = []
            for name in names:
                with Image.open(io.BytesIO(z.read(name))) as im:
                    a = np.asarray(im.convert("RGB"))
                if a.shape != (t, t, 3):
                    raise DataError(f"{path}: {name} is {a.shape[1]}x{a.shape[0]}, not {t}x{t}")
                tiles.append(torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous())
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable pack ({e})") from None
    if not tiles:
        raise DataError(f"{path}: the pack holds no tiles")
    return tiles
