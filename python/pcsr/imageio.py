"""Image files in and out: PNG/JPEG/WebP in, PNG out, written atomically.

Images become float RGB tensors ``[3, H, W]`` in [0, 1]. An alpha channel is kept aside
(and upscaled separately by the caller); greyscale images are run as RGB and written back
as greyscale.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_path


class ImageError(ValueError):
    """A file that cannot be read as an image, or an output that cannot be written."""


@dataclass
class LoadedImage:
    rgb: torch.Tensor  # [3, H, W] float32 in [0, 1]
    alpha: torch.Tensor | None  # [1, H, W] float32 in [0, 1] or None
    grey: bool  # the file was greyscale


def read_image(path: str | os.PathLike) -> LoadedImage:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32) / (65535.0 if mode != "I" or np.asarray(im).max() > 255 else 255.0)
                rgb = torch.from_numpy(arr.copy())[None].expand(3, -1, -1).clone()
                return LoadedImage(rgb.clamp_(0, 1), None, True)
            grey = mode in ("L", "LA", "1") or (mode == "P" and _palette_is_grey(im))
            has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)
            rgba = im.convert("RGBA") if has_alpha else im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from None
    arr = torch.from_numpy(np.asarray(rgba, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ImageError(f"{path}: empty image ({arr.shape[2]}x{arr.shape[1]})")
    alpha = arr[3:4].contiguous() if has_alpha else None
    return LoadedImage(arr[:3].contiguous(), alpha, grey)


def _palette_is_grey(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[C, H, W] float in [0, 1] -> HxWxC uint8, rounding as the authors' metric does."""
    return x.detach().float().mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any work) when ``path`` cannot be written."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ImageError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise ImageError(f"cannot write {path}: it is a folder")
    if not os.access(path.parent, os.W_OK):
        raise ImageError(f"cannot write {path}: folder {path.parent} is not writable")
    return path


def write_png(path: str | os.PathLike, rgb: torch.Tensor, alpha: torch.Tensor | None = None, grey: bool = False) -> None:
    """Write ``rgb [3,H,W]`` (+ ``alpha [1,H,W]``) in [0, 1] as PNG, atomically: the image is
    written to a temporary file in the same folder and renamed, so a failure never leaves
    a partial file behind."""
    path = check_writable(path)
    arr = to_uint8(rgb)
    if grey:
        im = Image.fromarray(arr).convert("L")
    else:
        im = Image.fromarray(arr, "RGB")
    if alpha is not None:
        a = Image.fromarray(to_uint8(alpha)[:, :, 0], "L")
        im = im.convert("LA" if grey else "RGBA")
        im.putalpha(a)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_classes(path: str | os.PathLike, classes: torch.Tensor, num_branches: int, image: torch.Tensor | None = None) -> None:
    """A picture of the routing: heavy branches red, light ones green (lighter = brighter),
    blended over the output image when given (as the authors' demo colours it)."""
    M = num_branches
    heavy = (M + 1) // 2
    colours = []
    for j in range(M):
        if j < heavy:
            t = j / max(1, heavy - 1) if heavy > 1 else 0.0
            colours.append((1.0, 0.4 * t, 0.0))
        else:
            t = (j - heavy) / max(1, M - heavy - 1) if M - heavy > 1 else 0.0
            colours.append((0.0, 1.0 - 0.4 * t, 0.4 * t))
    lut = torch.tensor(colours, dtype=torch.float32)  # [M, 3]
    vis = lut[classes.cpu()].permute(2, 0, 1)  # [3, H, W]
    if image is not None:
        vis = 0.35 * vis + 0.65 * image.detach().float().cpu().clamp(0, 1)
    write_png(path, vis)
