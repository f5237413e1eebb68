"""The paper's evaluation protocol, per image.

HR centre-cropped to a multiple of the scale; LR = MATLAB-style bicubic downscale of the
float HR (never re-quantised); the model's output is not clamped before the metric; PSNR
on RGB with both images quantised to 8 bits and the border shaved by the scale; FLOPs by
the official counting rules. The bicubic baseline is the same MATLAB-style resize of the
LR up to HR size.

``seconds`` is the model forward alone (image IO excluded), the median of ``repeat`` warm
calls: the first call of a model on an image (whose output gives the PSNR) is not timed,
because it also folds BatchNorm, prepares the backbone, counts the cost vector's FLOPs and,
on a GPU, compiles kernels (a 64 px image once took 14 times longer in its first call).
``calls`` in the record says how many calls the median is of.
"""
from __future__ import annotations

import statistics
import time

import torch

from .imresize import imresize
from .metrics import psnr
from .model import PCSR, SRModel


def centre_crop(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop [.., H, W] to the largest multiple of ``scale`` per side, centred."""
    H, W = hr.shape[-2:]
    Hc, Wc = H // scale * scale, W // scale * scale
    if Hc == 0 or Wc == 0:
        raise ValueError(f"image of {W}x{H} is smaller than the scale {scale}")
    top, left = (H - Hc) // 2, (W - Wc) // 2
    return hr[..., top:top + Hc, left:left + Wc]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_warm(fn, repeat: int, device: torch.device):
    """``(output of a first, untimed call, median seconds of repeat more calls or None)``."""
    out = fn()
    times = []
    for _ in range(max(0, int(repeat))):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return out, (statistics.median(times) if times else None)


def evaluate(model: PCSR, hr: torch.Tensor, scale: int, k: float = 0.0, adaptive: bool = False,
             refine: bool = True, original: SRModel | None = None, repeat: int = 1) -> dict:
    """Evaluate one HR image ``[3, H, W]`` in [0, 1]. Returns a flat record (see keys);
    ``repeat``: timed warm calls per model (0: no timing, ``seconds`` is None)."""
    if not isinstance(model, PCSR):
        raise TypeError(f"--model must be a PCSR checkpoint, got a {type(model).__name__} (use it as --original)")
    if original is not None and not isinstance(original, SRModel):
        raise TypeError(f"--original must be a plain SR model, got a {type(original).__name__}")
    device = next(model.parameters()).device
    hr = centre_crop(hr.to(device=device, dtype=torch.float32), scale)[None]
    H, W = hr.shape[-2:]
    lr = imresize(hr, size=(H // scale, W // scale))
    if original is not None and original.scale != scale:
        raise ValueError(f"--original upscales x{original.scale}, but the evaluation is at x{scale}")
    (sr, classes), seconds = timed_warm(lambda: model(lr, scale=scale, k=k, adaptive=adaptive, refine=refine),
                                        repeat, device)
    rec = {
        "height": H, "width": W, "scale": scale,
        "psnr": psnr(sr, hr, shave=scale),
        "gflops": model.flops(lr.shape, classes) / 1e9,
        "heavy_fraction": float((classes < model.num_heavy).float().mean()),
        "seconds": seconds,
        "calls": max(0, int(repeat)),
        "bicubic_psnr": psnr(imresize(lr, size=(H, W)), hr, shave=scale),
    }
    del sr, classes
    if original is not None:
        sr_o, rec["original_seconds"] = timed_warm(lambda: original(lr), repeat, device)
        rec["original_psnr"] = psnr(sr_o, hr, shave=scale)
        rec["original_gflops"] = original.flops(lr.shape) / 1e9
        rec["flops_ratio"] = rec["gflops"] / rec["original_gflops"]
        rec["time_ratio"] = (rec["seconds"] / rec["original_seconds"]) if seconds is not None else None
    return rec
