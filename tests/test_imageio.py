"""Images as users have them: format from the extension, EXIF orientation, ICC profile and
gamma carried over, 16 bits kept, grey stays grey, alpha upscaled, animated files and
decompression bombs refused -- through pcsr.imageio and through `pcsr upscale`."""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
import png
import pytest
import tifffile
import torch
from PIL import Image, ImageCms, ImageOps

from pcsr import checkpoint
from pcsr.cli import main
from pcsr.imageio import ImageError, load_image, read_image, write_image
from pcsr.imresize import imresize
from pcsr.model import PCSR

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    m = PCSR("fsrcnn", {"d": 8, "s": 4, "m": 1}, [[12, 12], [6]], [5])
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    checkpoint.save(m, path)
    return str(path)


def _rgb8(h=9, w=13, seed=0, chans=3):
    return (np.random.default_rng(seed).random((h, w, chans)) * 255).astype(np.uint8)


def _rgb16(h=9, w=13, seed=0, chans=3):
    return (np.random.default_rng(seed).random((h, w, chans)) * 65535).astype(np.uint16)


def _sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


# --- reading -------------------------------------------------------------------------------------

def test_read_image_is_the_models_input(tmp_path):
    arr = _rgb8()
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 9, 13) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    p = tmp_path / "o.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_rgb8(7, 12)).save(p, exif=exif)
    with Image.open(p) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = load_image(p).rgb
    assert tuple(got.shape[1:]) == upright.shape[:2]
    assert torch.equal(got, torch.from_numpy(upright.copy()).permute(2, 0, 1).float() / 255)
    if orientation >= 5:
        assert upright.shape[:2] == (12, 7)


def test_sixteen_bit_png_and_tiff_keep_their_bits(tmp_path):
    for chans, kw in ((3, {}), (4, {"alpha": True}), (2, {"greyscale": True, "alpha": True})):
        a = _rgb16(chans=chans, seed=chans)
        path = tmp_path / f"c{chans}.png"
        with open(path, "wb") as f:  # written by pypng itself, not by the code under test
            png.Writer(13, 9, bitdepth=16, greyscale=kw.get("greyscale", False), alpha=kw.get("alpha", False)).write(
                f, a.reshape(9, -1))
        img = load_image(path)
        assert img.bits == 16 and img.grey == (chans == 2) and (img.alpha is not None) == (chans != 3)
        colour = a[..., :1] if chans == 2 else a[..., :3]
        assert torch.equal(img.rgb[0 if chans == 2 else slice(None)].reshape(-1),
                           torch.from_numpy(colour.astype(np.float32) / 65535).permute(2, 0, 1)[
                               0 if chans == 2 else slice(None)].reshape(-1))
    a = _rgb16(seed=7)
    tifffile.imwrite(tmp_path / "t.tif", a)
    img = load_image(tmp_path / "t.tif")
    assert img.bits == 16 and torch.equal(img.rgb, torch.from_numpy(a.astype(np.float32) / 65535).permute(2, 0, 1))
    grey = _rgb16(seed=8)[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.png")  # Pillow writes 16-bit grey (I;16) itself
    img = load_image(tmp_path / "g.png")
    assert img.bits == 16 and img.grey and torch.equal(img.rgb[1], torch.from_numpy(grey.astype(np.float32) / 65535))


def test_sixteen_bit_tiff_that_tifffile_cannot_decode_is_read_at_8_bits_with_a_warning(tmp_path, monkeypatch):
    a = _rgb16(seed=3)
    tifffile.imwrite(tmp_path / "t.tif", a)

    class Refuses:
        def __init__(self, *a, **k):
            raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile, "TiffFile", Refuses)
    with pytest.warns(UserWarning, match="imagecodecs"):
        img = load_image(tmp_path / "t.tif")
    assert img.bits == 8 and (img.rgb - torch.from_numpy(a / 65535.0).permute(2, 0, 1)).abs().max() < 1 / 255


@pytest.mark.parametrize("kind", ["gif", "apng", "tiff"])
def test_animated_input_is_refused(tmp_path, kind, model_path, capsys):
    frames = [Image.fromarray(_rgb8(seed=s)) for s in range(3)]
    p = tmp_path / {"gif": "a.gif", "apng": "a.png", "tiff": "a.tif"}[kind]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match="3 frames"):
        load_image(p)
    assert main(["upscale", str(p), "-o", str(tmp_path / "o.png"), "--model", model_path]) == 2
    assert "animated or multi-frame" in capsys.readouterr().err and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("pixels", [150, 250])  # over the warning limit; over twice it (Pillow's error)
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, pixels, model_path, capsys):
    p = tmp_path / "bomb.png"
    Image.new("RGB", (pixels // 10, 10)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning escapes either
        with pytest.raises(ImageError, match="decompression bomb"):
            load_image(p)
    assert main(["upscale", str(p), "-o", str(tmp_path / "o.png"), "--model", model_path]) == 2
    err = capsys.readouterr().err
    assert "decompression bomb" in err and "MAX_IMAGE_PIXELS" in err and "Traceback" not in err


def test_cmyk_jpeg_comes_out_rgb(tmp_path):
    Image.fromarray(_rgb8()).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    img = load_image(tmp_path / "c.jpg")
    assert img.rgb.shape == (3, 9, 13) and not img.grey and img.alpha is None


# --- writing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext,fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP"),
                                     (".tif", "TIFF"), (".TIFF", "TIFF")])
def test_format_comes_from_the_extension(tmp_path, ext, fmt):
    write_image(tmp_path / f"o{ext}", torch.rand(3, 9, 13))
    with Image.open(tmp_path / f"o{ext}") as im:
        assert im.format == fmt and im.size == (13, 9)


@pytest.mark.parametrize("name", ["o.xyz", "o", "o.gif"])
def test_unknown_extension_is_an_error(tmp_path, name):
    with pytest.raises(ImageError, match="the output format comes from the extension"):
        write_image(tmp_path / name, torch.rand(3, 4, 4))
    assert list(tmp_path.iterdir()) == []


def test_jpeg_quality(tmp_path):
    x = torch.rand(3, 64, 64)
    write_image(tmp_path / "lo.jpg", x, quality=20)
    write_image(tmp_path / "hi.jpg", x, quality=100)
    assert (tmp_path / "lo.jpg").stat().st_size < 0.6 * (tmp_path / "hi.jpg").stat().st_size
    with pytest.raises(ImageError, match="quality"):
        write_image(tmp_path / "q.jpg", x, quality=0)


def test_write_image_conventions(tmp_path):
    write_image(tmp_path / "b.png", torch.rand(1, 3, 5, 6) * 1.5 - 0.25)  # a batch of one, clamped
    assert np.asarray(Image.open(tmp_path / "b.png")).shape == (5, 6, 3)
    for bad, msg in ((torch.rand(2, 3, 5, 6), r"\[3, H, W\]"), (torch.rand(4, 5, 6), r"\[3, H, W\]"),
                     ((torch.rand(3, 5, 6) * 255).to(torch.uint8), "float"),
                     (torch.full((3, 5, 6), float("nan")), "NaN")):
        with pytest.raises(ImageError, match=msg):
            write_image(tmp_path / "x.png", bad)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
@pytest.mark.parametrize("bits", [8, 16])
def test_icc_profile_is_carried(tmp_path, ext, bits):
    src = tmp_path / "in.png"
    Image.fromarray(_rgb8()).save(src, icc_profile=SRGB)
    img = load_image(src)
    assert img.icc_profile == SRGB
    out = tmp_path / f"out{ext}"
    write_image(out, img.rgb, like=img, bits=bits)
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == SRGB


def test_png_gamma_is_carried(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", (45455).to_bytes(4, "big"))
    Image.fromarray(_rgb8()).save(tmp_path / "g.png", pnginfo=info)
    img = load_image(tmp_path / "g.png")
    for bits in (8, 16):
        write_image(tmp_path / f"o{bits}.png", img.rgb, like=img, bits=bits)
        with Image.open(tmp_path / f"o{bits}.png") as im:
            assert im.info.get("gamma") == pytest.approx(0.45455)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("chans", [1, 2, 3, 4])
def test_sixteen_bit_output(tmp_path, ext, chans):
    x = torch.rand(3, 9, 13, dtype=torch.float64)
    alpha = torch.rand(1, 9, 13) if chans in (2, 4) else None
    write_image(tmp_path / f"o{ext}", x, bits=16, grey=chans <= 2, alpha=alpha)
    if ext == ".png":
        w, h, rows, info = png.Reader(filename=str(tmp_path / "o.png")).asDirect()
        assert info["bitdepth"] == 16 and info["planes"] == chans
        arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(h, w, chans)
    else:
        arr = tifffile.imread(tmp_path / "o.tif")
        assert arr.dtype == np.uint16
        arr = arr[..., None] if arr.ndim == 2 else arr
        if chans == 2:  # written as RGBA (see _write_tiff16)
            assert np.array_equal(arr[..., 0], arr[..., 1])
            arr = arr[..., [0, 3]]
    grey = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    colour = grey[None] if chans <= 2 else x
    expect = np.rint(colour.permute(1, 2, 0).numpy() * 65535)
    assert np.abs(arr[..., :colour.shape[0]].astype(np.float64) - expect).max() <= 1  # float32 rounding at .5
    if alpha is not None:
        assert np.abs(arr[..., -1].astype(np.float64) - np.rint(alpha[0].double().numpy() * 65535)).max() <= 1


# --- end to end ------------------------------------------------------------------------------------

def test_cli_keeps_16_bits_grey_alpha_and_profile(tmp_path, model_path):
    # a smooth 16-bit ramp whose steps are finer than 8 bits can hold
    ramp = (20000 + np.arange(9 * 13, dtype=np.uint16).reshape(9, 13) * 3)
    rgb = np.stack([ramp, ramp[::-1], ramp.T.reshape(9, 13)], -1).astype(np.uint16)
    with open(tmp_path / "deep.png", "wb") as f:
        png.Writer(13, 9, bitdepth=16, greyscale=False).write(f, rgb.reshape(9, -1))
    Image.fromarray(_rgb8(chans=4)).save(tmp_path / "rgba.png", icc_profile=SRGB)
    Image.fromarray(_rgb8()[..., 0]).save(tmp_path / "grey.png")
    before = {p.name: _sha(p) for p in tmp_path.iterdir()}
    out = tmp_path / "out"
    assert main(["upscale", str(tmp_path), "-o", str(out), "--model", model_path, "--scale", "2",
                 "--format", "tif"]) == 0
    assert {p.name: _sha(p) for p in tmp_path.iterdir() if p.is_file()} == before
    deep = tifffile.imread(out / "deep.tif")
    assert deep.dtype == np.uint16 and deep.shape == (18, 26, 3)
    assert (deep % 257 != 0).mean() > 0.9  # not 8-bit values stretched to 16
    with Image.open(out / "rgba.tif") as im:
        assert im.mode == "RGBA" and im.size == (26, 18) and im.info.get("icc_profile") == SRGB
        alpha = np.asarray(im)[..., 3].astype(float)
    a0 = torch.from_numpy(_rgb8(chans=4)[..., 3].astype(np.float32) / 255)[None]
    expect = imresize(a0, size=(18, 26)).clamp(0, 1)[0].numpy() * 255
    assert np.abs(alpha - np.rint(expect)).max() <= 1  # alpha upscaled bicubic, as the image's size
    with Image.open(out / "grey.tif") as im:
        assert im.mode == "L" and im.size == (26, 18)


def test_cli_jpeg_output_with_quality_and_alpha_refused(tmp_path, model_path, capsys):
    Image.fromarray(_rgb8()).save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.jpg"), "--model", model_path,
                 "--quality", "80"]) == 0
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.format == "JPEG" and im.size == (52, 36)
    Image.fromarray(_rgb8(chans=4)).save(tmp_path / "t.png")
    assert main(["upscale", str(tmp_path / "t.png"), "-o", str(tmp_path / "t.jpg"), "--model", model_path]) == 2
    assert "alpha channel, which JPEG cannot store" in capsys.readouterr().err
    assert not (tmp_path / "t.jpg").exists()
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--model", model_path,
                 "--quality", "80"]) == 2
    assert "--quality applies to .jpg and .webp" in capsys.readouterr().err
