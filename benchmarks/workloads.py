"""What the benchmarks run: the three PCSR variants and their originals, the output sizes,
the LR input, and the ways of running PCSR's upsampling stage (one per provider).

Shared by ``compare.py`` (``pcsr bench``) and the pytest-benchmark microbenchmarks
(``test_bench_*.py``).

Sizes are HR outputs at x4 (LR = output / 4):

    1k  1280 x 800    (from 320 x 200)
    2k  2560 x 1600   (from 640 x 400)
    4k  3840 x 2160   (from 960 x 540)
    8k  7680 x 4320   (from 1920 x 1080)

or any ``WxH`` of the output with both sides multiples of 4 (``256x192``).

Weights: the authors' released checkpoints where they exist on this machine (FSRCNN and
CARN, PCSR and original; ``../shared/reference/official-pcsr``) because the time PCSR saves
depends on how many pixels its trained classifier sends to the light branch; otherwise
random weights whose classifier bias is shifted so that a chosen fraction of the pixels
(default 0.5) goes to the heavy branch at k = 0. The LR input is a real photograph resized
to the LR size (``../shared/data/train`` or scikit-image's astronaut), because random noise
is "hard" everywhere and routes almost every pixel to the heavy branch.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import pcsr_kernels
from pcsr.backbones import RGB_MEAN
from pcsr.model import PCSR, SRModel

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# The authors' checkpoints: PCSR_OFFICIAL_DIR when set (a GPU session copies them into a
# git-ignored folder of the checkout that travels with the call), else the shared folder.
OFFICIAL = Path(os.environ["PCSR_OFFICIAL_DIR"]) if os.environ.get("PCSR_OFFICIAL_DIR") else (
    SHARED / "reference" / "official-pcsr")
SCALE = 4

SIZES = {"1k": (800, 1280), "2k": (1600, 2560), "4k": (2160, 3840), "8k": (4320, 7680)}  # (H, W) of the output


@dataclass(frozen=True)
class Variant:
    key: str                 # fsrcnn | carn | srresnet
    name: str                # FSRCNN-PCSR ...
    original_name: str       # FSRCNN ...
    backbone_args: dict      # PCSR encoder
    upsamplers: list         # hidden widths per branch, heaviest first
    classifier: list
    original_args: dict      # the original x4 network
    official_pcsr: str | None = None
    official_original: str | None = None
    rgb_mean: tuple = field(default=(0.0, 0.0, 0.0))


VARIANTS = {
    "fsrcnn": Variant("fsrcnn", "FSRCNN-PCSR", "FSRCNN", dict(d=48, s=12, m=4), [[58] * 4, [10] * 3], [],
                      dict(d=56, s=12, m=4, scale=SCALE), "fsrcnn-pcsr-phase1.pth", "fsrcnn-x4.pth",
                      RGB_MEAN["fsrcnn"]),
    "carn": Variant("carn", "CARN-PCSR", "CARN-M", dict(nf=52, group=4), [[74] * 4, [20] * 3], [10, 10],
                    dict(nf=64, group=4, scale=SCALE), "carn-pcsr-phase1.pth", "carn-x4.pth", RGB_MEAN["carn"]),
    "srresnet": Variant("srresnet", "SRResNet-PCSR", "SRResNet", dict(nf=58, nb=16), [[170] * 4, [40] * 3], [20, 20],
                        dict(nf=64, nb=16, scale=SCALE), None, None, RGB_MEAN["srresnet"]),
}


def parse_size(s: str) -> tuple[str, int, int]:
    """``'2k'`` or ``'WxH'`` (output) -> (label, H, W)."""
    key = s.strip().lower()
    if key in SIZES:
        H, W = SIZES[key]
        return key, H, W
    m = re.fullmatch(r"(\d+)x(\d+)", key)
    if not m:
        raise ValueError(f"size {s!r}: expected one of {', '.join(SIZES)} or WxH of the output (e.g. 256x192)")
    W, H = int(m.group(1)), int(m.group(2))
    if W % SCALE or H % SCALE or W < 4 * SCALE or H < 4 * SCALE:
        raise ValueError(f"size {s!r}: both sides must be multiples of {SCALE} and at least {4 * SCALE}")
    return f"{W}x{H}", H, W


def parse_variant(s: str) -> Variant:
    key = s.strip().lower().removesuffix("-pcsr")
    if key not in VARIANTS:
        raise ValueError(f"variant {s!r}: expected one of {', '.join(VARIANTS)}")
    return VARIANTS[key]


# --- the LR input ------------------------------------------------------------------------

def _photo_path() -> str | None:
    env = os.environ.get("PCSR_BENCH_IMAGE")
    if env:
        return env
    files = sorted(glob.glob(str(SHARED / "data" / "train" / "*.jpg")))
    return files[0] if files else None


def make_lr(h: int, w: int, device="cpu", seed: int = 0) -> tuple[torch.Tensor, str]:
    """A natural LR image [1, 3, h, w] in [0, 1] and where it came from."""
    img, src = None, None
    path = _photo_path()
    if path:
        from pcsr.imageio import load_image

        img, src = load_image(path).rgb, Path(path).name
    else:
        try:
            from skimage import data

            img = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).float() / 255
            src = "skimage astronaut"
        except ImportError:
            pass
    if img is None:  # smooth random field: low-frequency noise with some structure
        g = torch.Generator().manual_seed(seed)
        img = F.interpolate(torch.rand(1, 3, 24, 32, generator=g), size=(480, 640), mode="bicubic",
                            align_corners=False)[0]
        src = "synthetic"
    lr = F.interpolate(img[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return lr.contiguous().to(device), src


# --- models ---------------------------------------------------------------------------------

def _official(name: str | None) -> Path | None:
    if name is None:
        return None
    p = OFFICIAL / name
    return p if p.is_file() else None


def build_pcsr(v: Variant, weights: str = "auto", device="cpu", seed: int = 0) -> tuple[PCSR, str]:
    """The PCSR model of a variant and where its weights came from ('official' / 'random')."""
    from pcsr.checkpoint import load

    path = _official(v.official_pcsr) if weights in ("auto", "official") else None
    if weights == "official" and path is None:
        raise FileNotFoundError(f"{v.name}: no official checkpoint at {OFFICIAL / str(v.official_pcsr)}")
    if path is not None:
        return load(path, device), "official"
    torch.manual_seed(seed)
    model = PCSR(v.key, v.backbone_args, v.upsamplers, v.classifier, v.rgb_mean)
    _unit_features(model)
    return model.to(device).eval(), "random"


@torch.no_grad()
def _unit_features(model: PCSR) -> None:
    """Scale a randomly initialised backbone's last convolution so that its features have
    unit spread. PyTorch's default initialisation shrinks the signal layer by layer: a
    random FSRCNN backbone gives features of ~1e-6, whose classifier logits then tie on
    most pixels, so every provider's routing would hang on float rounding instead of the
    features (and the benchmark would time a degenerate workload)."""
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        return
    model.eval()
    g = torch.Generator().manual_seed(1)
    feat = model._inference_backbone()(model.normalise(torch.rand(1, 3, 24, 24, generator=g)))
    std = float(feat.std())
    if std > 0:
        convs[-1].weight.div_(std)
        if convs[-1].bias is not None:
            convs[-1].bias.div_(std)


def build_original(v: Variant, weights: str = "auto", device="cpu", seed: int = 0) -> tuple[SRModel, str]:
    from pcsr.checkpoint import load

    path = _official(v.official_original) if weights in ("auto", "official") else None
    if weights == "official" and path is None:
        raise FileNotFoundError(f"{v.original_name}: no official checkpoint at {OFFICIAL / str(v.official_original)}")
    if path is not None:
        return load(path, device), "official"
    torch.manual_seed(seed)
    return SRModel(v.key, v.original_args, v.rgb_mean).to(device).eval(), "random"


@torch.no_grad()
def calibrate_heavy_fraction(model: PCSR, lr: torch.Tensor, fraction: float) -> None:
    """Shift the classifier's last bias so that about ``fraction`` of the pixels of ``lr``
    go to the heavy branch at k = 0 (M = 2 only). Measured on a centre crop of at most
    96x96 LR pixels so that it costs nothing at 8K."""
    if model.num_branches != 2:
        return
    h, w = lr.shape[-2:]
    ch, cw = min(h, 96), min(w, 96)
    crop = lr[..., (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    feat = model._inference_backbone()(model.normalise(crop))
    with pcsr_kernels.use_backend("reference"):
        probs = pcsr_kernels.classify(feat, (ch * SCALE, cw * SCALE), model.classifier.flat_params())
    d = (torch.log(probs[..., 0]) - torch.log(probs[..., 1])).flatten()  # heavy iff d > 0
    shift = torch.quantile(d.double(), 1.0 - fraction).item()
    model.classifier.layers[-1].bias[0] -= shift


def agreement(sr, cls, sr_ref, cls_ref) -> tuple[bool, str]:
    """Compare an upsampling result with the reference's: (ok, summary). Pixels whose class
    differs (probabilities within rounding of the decision boundary) are allowed at a rate
    of 1e-3; each can move its own value and, through refinement, its 8 neighbours', hence
    up to 9e-3 of the values may be off by more than 1e-3 (relative 1e-3 above 1)."""
    mism = float((cls != cls_ref).double().mean()) if cls is not None else 0.0
    err = (sr.double() - sr_ref.double()).abs()
    bad = float((err > 1e-3 + 1e-3 * sr_ref.double().abs()).double().mean())
    ok = mism <= 1e-3 and bad <= 9e-3
    return ok, f"class mismatch {mism:.1e}, values off by > 1e-3: {bad:.1e}, max err {float(err.max()):.1e}"


# --- the ways of running the upsampling stage ---------------------------------------------

def model_args(model: PCSR, feat: torch.Tensor) -> dict:
    """The weights of ``model`` as route_upsample takes them."""
    return dict(classifier=model.classifier.flat_params(),
                upsamplers=[p for u in model.upsamplers for p in u.flat_params()],
                depths=[len(u.widths) - 1 for u in model.upsamplers],
                cost=model.cost(SCALE).to(device=feat.device, dtype=feat.dtype))


_official_loop: Callable | None = None
_official_error: str | None = None


def official_loop() -> Callable | None:
    """``official_route_upsample`` from ``benchmarks/official_style.py`` (the authors'
    inference loop re-stated), or None when that file is not there (see official_error())."""
    global _official_loop, _official_error
    if _official_loop is None and _official_error is None:
        try:
            from official_style import official_route_upsample  # benchmarks/ is on sys.path
            _official_loop = official_route_upsample
        except ImportError as e:
            _official_error = f"benchmarks/official_style.py not importable ({e})"
    return _official_loop


def official_error() -> str | None:
    official_loop()
    return _official_error


def providers(device_type: str) -> tuple[list[str], dict[str, str]]:
    """PCSR providers for tensors on ``device_type``: the project's backends that are
    available, 'reference' (pure PyTorch), 'official' (the authors' loop). Returns
    (available, {unavailable: why})."""
    from pcsr_kernels import backend

    avail, missing = [], {}
    for name in ("cpu", "triton", "cuda"):
        if name == "cpu" and device_type != "cpu" or name in ("triton", "cuda") and device_type != "cuda":
            continue
        ok, why = backend.availability(name, device_type)
        (avail.append(name) if ok else missing.__setitem__(name, why))
    avail.append("reference")
    if official_loop() is not None:
        avail.append("official")
    else:
        missing["official"] = official_error()
    return avail, missing


# (backend, device) pairs the microbenchmarks are parametrised over; GPU ones skip without a GPU
BENCH_BACKENDS = [("cpu", "cpu"), ("reference", "cpu"), ("triton", "cuda"), ("cuda", "cuda"), ("reference", "cuda")]


def under_backend(name: str, fn: Callable) -> Callable:
    """``fn`` run with the pcsr backend ``name``."""
    def run():
        with pcsr_kernels.use_backend(name):
            return fn()
    return run


def route_upsample_fn(provider: str) -> Callable:
    """``f(feat, lr, out_size, classifier, upsamplers, depths, cost, k, adaptive, refine)
    -> (sr, classes)`` for a provider."""
    if provider == "official":
        loop = official_loop()
        if loop is None:
            raise RuntimeError(official_error())

        def run(feat, lr, out_size, classifier, upsamplers, depths, cost, k=0.0, adaptive=False, refine=True):
            out = loop(feat, lr, out_size, classifier, upsamplers, depths, cost, k=k, adaptive=adaptive, refine=refine)
            return out if isinstance(out, tuple) else (out, None)
        return run

    def run(feat, lr, out_size, classifier, upsamplers, depths, cost, k=0.0, adaptive=False, refine=True):
        with pcsr_kernels.use_backend(provider):
            return pcsr_kernels.route_upsample(feat, lr, out_size, classifier, upsamplers, depths, cost, k,
                                               adaptive, refine)
    return run


def pcsr_end_to_end(model: PCSR, provider: str) -> Callable:
    """``f(lr, out_size, k, adaptive, refine) -> (sr, classes)``: the whole PCSR inference
    (normalise, backbone, upsampling stage, denormalise) with one provider. The project's
    providers go through ``PCSR.forward``; the authors' loop gets the authors' backbone
    (BatchNorm not folded) and the same normalisation."""
    if provider != "official":
        def run(lr, out_size, k=0.0, adaptive=False, refine=True):
            with pcsr_kernels.use_backend(provider):
                return model(lr, out_size=out_size, k=k, adaptive=adaptive, refine=refine)
        return run
    ru = route_upsample_fn("official")

    @torch.no_grad()
    def run_official(lr, out_size, k=0.0, adaptive=False, refine=True):
        x = model.normalise(lr)
        feat = model.backbone(x)
        sr, classes = ru(feat, x, out_size, **model_args(model, feat), k=k, adaptive=adaptive, refine=refine)
        return model.denormalise(sr), classes
    return run_official
