"""Image files in and out, as users have them.

Tensor conventions: an image is float32 in [0, 1]; :func:`read_image` returns the batch
``[1, 3, h, w]`` that ``model(lr)`` takes, :func:`load_image` the image ``[3, h, w]`` with
what else the file holds (alpha, greyscale, bit depth, colour profile). :func:`write_image`
takes ``[3, H, W]`` or ``[1, 3, H, W]``, clamps to [0, 1] and writes atomically.

Reading (Pillow, plus pypng / tifffile for what Pillow keeps only at 8 bits):
- the EXIF orientation is applied (phone photos come out upright);
- 16-bit PNG and TIFF keep their 16 bits (Pillow reduces 16-bit RGB to 8 bits, so those
  files are decoded by pypng and tifffile);
- greyscale is run as RGB and remembered; alpha is kept aside (the caller upscales it);
- animated files are refused (video is not an image); Pillow's decompression-bomb guard
  (``PIL.Image.MAX_IMAGE_PIXELS``) is an error, its warning level included.

Writing: the format comes from the extension (.png, .jpg/.jpeg, .webp, .tif/.tiff; any
other is an error), ICC profile and PNG gamma carried over, 16 bits kept in PNG and TIFF.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .atomic import atomic_path

# extension -> Pillow format name of what write_image can write
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
# extensions a folder is scanned for
READ_SUFFIXES = set(WRITE_FORMATS) | {".bmp"}
DEFAULT_QUALITY = 95
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}


class ImageError(ValueError):
    """A file that cannot be read as an image, or an output that cannot be written."""


@dataclass
class ImageHeader:
    """What the file's header says, read without decoding the pixels."""

    width: int  # as stored (before the EXIF orientation, which PNG keeps after the pixels)
    height: int
    format: str
    mode: str
    has_alpha: bool


@dataclass
class LoadedImage:
    rgb: torch.Tensor  # [3, H, W] float32 in [0, 1]
    alpha: torch.Tensor | None  # [1, H, W] float32 in [0, 1] or None
    grey: bool  # the file was greyscale
    bits: int = 8  # 8 or 16 bits per sample
    icc_profile: bytes | None = None
    gamma: float | None = None  # PNG gAMA
    srgb: int | None = None  # PNG sRGB rendering intent

    def batch(self) -> torch.Tensor:
        """The model's input: ``[1, 3, H, W]``."""
        return self.rgb[None]


# --- reading ----------------------------------------------------------------------------------

def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        # a FIFO or a device would block or never end; a folder is not an image
        raise ImageError(f"{path}: not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: refused as a possible decompression bomb: {e} "
                         f"(the limit is PIL.Image.MAX_IMAGE_PIXELS)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from None


def _check_still(path: Path, im: Image.Image) -> None:
    # Phones write MPO files: a JPEG whose further frames are previews or depth maps; the
    # first frame is the photograph.
    if im.format != "MPO" and getattr(im, "n_frames", 1) > 1:
        raise ImageError(f"{path}: animated or multi-frame {im.format} ({im.n_frames} frames); pcsr upscales "
                         "still images (extract the frames first)")


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a malformed EXIF block must not cost the image
        return 1
    return value if value in range(1, 9) else 1


def probe(path: str | os.PathLike) -> ImageHeader:
    """Size, format and alpha of an image file, from its header (cheap): refuses what
    :func:`load_image` would refuse for the container (missing, bomb, animated)."""
    path = Path(path)
    with _open(path) as im:
        _check_still(path, im)
        w, h = im.size
        if w == 0 or h == 0:
            raise ImageError(f"{path}: empty image ({w}x{h})")
        has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
        return ImageHeader(w, h, im.format, im.mode, has_alpha)


def _rawmode(im: Image.Image) -> str:
    if not im.tile:
        return ""
    args = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
    return args[0] if isinstance(args, tuple) else str(args)


def _decode(path: Path, im: Image.Image, raw: str) -> tuple[np.ndarray, int, bool, bool]:
    """Pixels as ``[H, W, C]`` (C = 1, 2, 3, 4: grey, grey+alpha, RGB, RGBA), their bit depth,
    whether the image is grey, and whether the last channel is alpha. ``raw``: the file's
    raw mode as Pillow saw it before decoding ("RGB;16B": 16-bit RGB it reads at 8 bits)."""
    mode = im.mode
    if im.format in _SIXTEEN_BIT_FORMATS and ";16" in raw and not mode.startswith("I;16"):
        arr = _decode16(path, im.format)
        if arr is not None:
            return arr, 16, arr.shape[2] <= 2, arr.shape[2] in (2, 4)
    if mode.startswith("I;16") or (mode == "I" and im.format == "PNG"):
        arr = np.asarray(im).astype(np.uint16)
        return arr[:, :, None], 16, True, False
    if mode in ("I", "F"):
        raise ImageError(f"{path}: {'32-bit integer' if mode == 'I' else 'floating-point'} images are not supported "
                         "(8 or 16 bits per sample)")
    if mode == "P":
        pal = im.getpalette() or []
        grey = all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    else:
        grey = mode in ("1", "L", "LA", "La")
    alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    target = ("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB")
    if mode != target:
        im = im.convert(target)
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, 8, grey, alpha


def _decode16(path: Path, fmt: str) -> np.ndarray | None:
    """16-bit colour (or grey + alpha) PNG and TIFF pixels, ``[H, W, C]`` uint16; None when
    the file can only be read at 8 bits here (with a warning saying why)."""
    if fmt == "PNG":
        import png

        try:
            w, h, rows, info = png.Reader(filename=str(path)).asDirect()
            arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])  # [H, W*C]
        except (png.Error, OSError, ValueError) as e:
            raise ImageError(f"{path}: not a readable PNG ({e})") from None
        return arr.reshape(h, w, info["planes"])
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            page = tf.pages[0]
            arr = page.asarray()
            axes, extra = page.axes, tuple(getattr(page, "extrasamples", ()))
            photometric = int(page.photometric)
            if photometric not in (0, 1, 2):  # palette, CMYK, YCbCr...: not plain samples
                raise NotImplementedError(f"photometric interpretation {page.photometric!r}")
    except (ValueError, NotImplementedError, KeyError) as e:
        # tifffile decodes LZW, PackBits, JPEG... only with imagecodecs installed
        warnings.warn(f"{path}: 16-bit TIFF read at 8 bits by Pillow: tifffile cannot decode it ({e}); "
                      "for LZW, PackBits or JPEG compression `pip install imagecodecs` keeps the 16 bits",
                      stacklevel=3)
        return None
    if axes.startswith("S"):  # planar configuration: samples first
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if photometric == 0:  # MINISWHITE
        arr[..., :1] = 65535 - arr[..., :1]
    if extra and int(extra[0]) == 1 and arr.shape[2] in (2, 4):  # associated (premultiplied) alpha
        a = arr[..., -1:].astype(np.float64)
        col = np.where(a > 0, arr[..., :-1] * 65535.0 / np.maximum(a, 1), 0)
        arr = np.concatenate([np.clip(np.rint(col), 0, 65535), a], axis=-1)
    return arr.astype(np.uint16)[:, :, :4]


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1..8 applied to ``[H, W, C]`` as ``PIL.ImageOps.exif_transpose`` does."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.transpose(1, 0, 2)
    elif orientation == 6:
        arr = np.rot90(arr, -1)
    elif orientation == 7:
        arr = arr[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        arr = np.rot90(arr, 1)
    return np.ascontiguousarray(arr)


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Read an image file: ``rgb [3, H, W]`` float32 in [0, 1] upright, alpha aside, and what
    is needed to write the result back the same way (grey, bits, colour profile)."""
    path = Path(path)
    with _open(path) as im:
        _check_still(path, im)
        raw = _rawmode(im)  # load() clears the tile list that holds it
        try:
            im.load()
            arr, bits, grey, has_alpha = _decode(path, im, raw)
            orientation = _orientation(im)
            info = dict(im.info)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
            raise ImageError(f"{path}: not a readable image ({e})") from None
    arr = _orient(arr, orientation)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{path}: empty image ({arr.shape[1]}x{arr.shape[0]})")
    t = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1)  # [C, H, W]
    t.div_(65535.0 if bits == 16 else 255.0)
    colour = t[:-1] if has_alpha else t
    rgb = colour.expand(3, -1, -1) if colour.shape[0] == 1 else colour
    icc = info.get("icc_profile") or None
    return LoadedImage(rgb=rgb.contiguous(), alpha=t[-1:].contiguous() if has_alpha else None, grey=grey, bits=bits,
                       icc_profile=icc, gamma=info.get("gamma"), srgb=info.get("srgb"))


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as the model's input: ``[1, 3, h, w]`` float32 in [0, 1], EXIF
    orientation applied, greyscale as three equal channels, alpha dropped (see
    :func:`load_image` to keep it)."""
    return load_image(path).batch()


# --- writing ----------------------------------------------------------------------------------

def output_format(path: str | os.PathLike) -> str:
    """The Pillow format name chosen by ``path``'s extension, or :class:`ImageError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_FORMATS:
        what = f"extension {suffix!r}" if suffix else "no extension"
        raise ImageError(f"{path}: {what}: the output format comes from the extension: "
                         f"{', '.join(sorted(WRITE_FORMATS))}")
    return WRITE_FORMATS[suffix]


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


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[C, H, W] float in [0, 1] -> HxWxC uint8, rounding as the authors' metric does."""
    return _quantise(list(x), 8)


def _quantise(channels: list[torch.Tensor], bits: int, rows: int = 256) -> np.ndarray:
    """``[H, W]`` float planes -> ``[H, W, C]`` uint8 / uint16, clamped to [0, 1] and rounded.
    Done ``rows`` rows at a time so that an 8K output needs no full-size float copy."""
    top, dtype = (255.0, torch.uint8) if bits == 8 else (65535.0, torch.uint16)
    H, W = channels[0].shape
    out = torch.empty(H, W, len(channels), dtype=dtype)  # [H, W, C]
    for r in range(0, H, rows):
        for c, plane in enumerate(channels):
            out[r:r + rows, :, c] = plane[r:r + rows].detach().float().clamp(0, 1).mul_(top).round_().to("cpu", dtype)
    return out.numpy()


def _icc_for(icc: bytes | None, grey: bool) -> bytes | None:
    """The profile, if it describes the colour space written (a CMYK input's profile does
    not describe its RGB result)."""
    if not icc or len(icc) < 20:
        return None
    return icc if icc[16:20] == (b"GRAY" if grey else b"RGB ") else None


def write_image(path: str | os.PathLike, image: torch.Tensor, *, like: LoadedImage | None = None,
                alpha: torch.Tensor | None = None, grey: bool | None = None, bits: int | None = None,
                icc_profile: bytes | None = None, quality: int | None = None, overwrite: bool = True) -> None:
    """Write ``image`` (``[3, H, W]`` or ``[1, 3, H, W]``, float, clamped to [0, 1]) in the
    format of ``path``'s extension, atomically.

    ``like``: the :class:`LoadedImage` it was made from: its greyscale, bit depth, colour
    profile and PNG gamma are kept, and its alpha is resized to the image (bicubic).
    Explicit ``alpha [1, H, W]``, ``grey``, ``bits`` (8 or 16) and ``icc_profile`` override.
    ``quality`` (1-100, default 95) is for JPEG and WebP. JPEG cannot hold alpha (an error)
    nor 16 bits (written at 8). ``overwrite=False`` refuses an existing ``path``.
    """
    fmt = output_format(path)
    path = check_writable(path)
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise ImageError(f"write_image: image must be a float tensor in [0, 1], got "
                         f"{image.dtype if isinstance(image, torch.Tensor) else type(image).__name__}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ImageError(f"write_image: image must be [3, H, W] or [1, 3, H, W], got {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        raise ImageError(f"write_image: image holds {int((~torch.isfinite(image)).sum())} NaN or infinite values")
    if quality is not None and not (1 <= quality <= 100):
        raise ImageError(f"quality must be in 1..100, got {quality}")
    H, W = image.shape[-2:]
    gamma = srgb = None
    if like is not None:
        grey = like.grey if grey is None else grey
        bits = like.bits if bits is None else bits
        icc_profile = like.icc_profile if icc_profile is None else icc_profile
        gamma, srgb = like.gamma, like.srgb
        if alpha is None and like.alpha is not None:
            from .imresize import imresize

            alpha = like.alpha if like.alpha.shape[-2:] == (H, W) else imresize(like.alpha, size=(H, W))
    grey, bits = bool(grey), int(bits or 8)
    if bits not in (8, 16):
        raise ImageError(f"bits must be 8 or 16, got {bits}")
    if alpha is not None:
        alpha = alpha[0] if alpha.dim() == 4 else alpha
        if tuple(alpha.shape) != (1, H, W):
            raise ImageError(f"write_image: alpha must be [1, {H}, {W}], got {tuple(alpha.shape)}")
        if fmt not in _ALPHA_FORMATS:
            raise ImageError(f"{path}: the image has an alpha channel, which {fmt} cannot store "
                             f"(write .png, .webp or .tif)")
    if fmt not in _SIXTEEN_BIT_FORMATS:
        bits = 8
    x = image.detach()
    # the model ran a grey input as RGB; its output is near-grey: keep the luma
    planes = [0.299 * x[0].float() + 0.587 * x[1].float() + 0.114 * x[2].float()] if grey else list(x)
    if alpha is not None:
        planes.append(alpha[0])
    arr = _quantise(planes, bits)  # [H, W, C]
    icc = _icc_for(icc_profile, grey)
    with atomic_path(path, overwrite=overwrite) as tmp:
        if bits == 16 and fmt == "PNG":
            _write_png16(tmp, arr, icc, gamma)
        elif bits == 16:
            _write_tiff16(tmp, arr, icc)
        else:
            _write_pillow(tmp, arr, fmt, icc, gamma, srgb, DEFAULT_QUALITY if quality is None else quality)


def _write_pillow(tmp: str, arr: np.ndarray, fmt: str, icc: bytes | None, gamma: float | None,
                  srgb: int | None, quality: int) -> None:
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    im = Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode)
    opts: dict = {}
    if icc:
        opts["icc_profile"] = icc
    if fmt == "PNG":
        chunks = PngImagePlugin.PngInfo()
        if gamma:
            chunks.add(b"gAMA", struct.pack(">I", round(gamma * 100000)))
        if srgb is not None and not icc:  # the PNG spec forbids sRGB beside iCCP
            chunks.add(b"sRGB", bytes([int(srgb)]))
        opts["pnginfo"] = chunks
    elif fmt == "JPEG":
        # 4:4:4: chroma subsampling would halve the colour resolution just upscaled
        opts.update(quality=quality, subsampling=0)
    elif fmt == "WEBP":
        opts.update(quality=quality)
    elif fmt == "TIFF":
        opts["compression"] = "tiff_adobe_deflate"
    im.save(tmp, format=fmt, **opts)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _write_png16(tmp: str, arr: np.ndarray, icc: bytes | None, gamma: float | None) -> None:
    """16-bit PNG through pypng (Pillow cannot write 16-bit colour); the colour profile and
    gamma chunks are inserted after IHDR, where the PNG spec wants them."""
    import png

    h, w, c = arr.shape
    buf = io.BytesIO()
    png.Writer(w, h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16, compression=6).write(
        buf, arr.reshape(h, w * c))
    data = buf.getvalue()
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
    if gamma:
        extra += _png_chunk(b"gAMA", struct.pack(">I", round(gamma * 100000)))
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    with open(tmp, "wb") as f:
        f.write(data[:ihdr_end] + extra + data[ihdr_end:])


def _write_tiff16(tmp: str, arr: np.ndarray, icc: bytes | None) -> None:
    import tifffile

    c = arr.shape[2]
    if c == 2:  # Pillow (and so many viewers) cannot open 16-bit grey+alpha TIFF: write it as RGBA
        arr, c = arr[:, :, [0, 0, 0, 1]], 4
    tifffile.imwrite(tmp, arr[:, :, 0] if c == 1 else arr, photometric="minisblack" if c <= 2 else "rgb",
                     extrasamples=("unassalpha",) if c in (2, 4) else None, compression="zlib",
                     iccprofile=icc)


# --- the routing picture ------------------------------------------------------------------------

def classes_picture(classes: torch.Tensor, num_branches: int, image: torch.Tensor | None = None) -> torch.Tensor:
    """A picture of the routing, ``classes [..., H, W]`` -> ``[..., 3, H, W]`` float: heavy
    branches red, light ones green (lighter = brighter), blended over the output image
    ``[..., 3, H, W]`` when given (as the authors' demo colours it)."""
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
    lut = torch.tensor(colours, dtype=torch.float32, device=classes.device)  # [M, 3]
    vis = lut[classes.long()].movedim(-1, -3)  # [..., 3, H, W]; long: a uint8 index would be a mask
    if image is not None:
        vis = 0.35 * vis + 0.65 * image.detach().float().to(vis.device).clamp(0, 1)
    return vis


def write_classes(path: str | os.PathLike, classes: torch.Tensor, num_branches: int, image: torch.Tensor | None = None,
                  overwrite: bool = True) -> None:
    """:func:`classes_picture` of ``classes [H, W]`` written as an image."""
    vis = classes_picture(classes.cpu(), num_branches, None if image is None else image.cpu())
    write_image(path, vis, overwrite=overwrite)
