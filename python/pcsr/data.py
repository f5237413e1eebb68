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

Randomness comes only from the ``torch.Generator`` passed in, so a run is repeatable from
a seed and resumes exactly from the generator's saved state; each rank of a distributed
run owns its own generator (its own shard of crops).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .imageio import ImageError, load_image
from .imresize import imresize

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


class DataError(ValueError):
    """A data folder that cannot be trained on: missing, empty, no usable image."""


def find_images(folders: Sequence[str | os.PathLike]) -> list[Path]:
    """Every image file directly inside each folder (sorted, so the order is repeatable)."""
    if not folders:
        raise DataError("no data folder given")
    out: list[Path] = []
    for f in folders:
        p = Path(f)
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
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
    """Decode ``paths`` to uint8 ``[3, H, W]`` tensors, dropping (with a warning) images
    smaller than ``min_size`` on a side; fails when none is left or one is unreadable."""
    images, small = [], []
    for p in paths:
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
        generator: the only source of randomness.
    """

    def __init__(self, images: list[torch.Tensor], crop: int, scale: int, queries: int | None,
                 generator: torch.Generator):
        if crop % scale:
            raise DataError(f"the crop ({crop}) must be a multiple of the scale ({scale})")
        if not images:
            raise DataError("no training images")
        self.images, self.crop, self.scale, self.gen = images, crop, scale, generator
        n = crop * crop
        self.queries = n if queries is None or queries <= 0 or queries >= n else int(queries)
        self.coord = hr_coord(crop, crop)  # [n, 2]
        # Draw images in proportion to their area, so every pixel of the set is equally
        # likely to be in a crop whatever the image sizes.
        area = torch.tensor([float(im.shape[1] * im.shape[2]) for im in images], dtype=torch.float64)
        self.weights = area / area.sum()

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.gen))

    def crop_one(self) -> torch.Tensor:
        """One augmented HR crop ``[3, crop, crop]`` float32 in [0, 1]."""
        i = int(torch.multinomial(self.weights, 1, generator=self.gen))
        im = self.images[i]
        c = self.crop
        y, x = self._randint(im.shape[1] - c + 1), self._randint(im.shape[2] - c + 1)
        hr = im[:, y:y + c, x:x + c].float().div_(255)
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
            coord = self.coord[idx]
            gt = torch.gather(flat, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
        else:
            coord = self.coord.unsqueeze(0).expand(size, -1, -1)
            gt = flat
        cell = torch.tensor([2.0 / c, 2.0 / c]).expand(size, coord.shape[1], 2)
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
