"""Wall time and memory of one upscale through :func:`pcsr.tiling.upscale`.

    /usr/bin/time -v python benchmarks/tiling_peak.py IMAGE --lr-size 960x540 --model fsrcnn
    /usr/bin/time -v python benchmarks/tiling_peak.py IMAGE --max-memory 2.5e9 --out-dtype uint8 --save out.png

The image is read as the CLI reads it, optionally resized (MATLAB-style bicubic, as the
authors make LR images) to ``--lr-size``, then upscaled. Prints one JSON line: sizes, the
plan (tiles, estimated peak), seconds of the upscale, and this process's resident-set
high-water mark (VmHWM, which ``/usr/bin/time -v`` reports as "Maximum resident set size").
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--model", default="fsrcnn")
    ap.add_argument("--scale", type=float, default=4)
    ap.add_argument("--lr-size", help="WxH to resize the image to before upscaling")
    ap.add_argument("--max-memory", type=float, help="bytes (default: pcsr.memory.default_budget)")
    ap.add_argument("--tile", type=int)
    ap.add_argument("--out-dtype", choices=["float32", "uint8"], default="float32")
    ap.add_argument("--adaptive", action="store_true")
    ap.add_argument("--k", type=float, default=0.0)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--save", help="write the result as PNG (uint8 only)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import pcsr
    from pcsr import tiling
    from pcsr.imageio import read_image
    from pcsr.imresize import imresize

    model = pcsr.load(args.model)
    lr = read_image(args.image)
    if args.lr_size:
        w, h = (int(v) for v in args.lr_size.lower().split("x"))
        lr = imresize(lr, size=(h, w)).clamp_(0, 1)
    out_dtype = torch.uint8 if args.out_dtype == "uint8" else None
    max_memory = int(args.max_memory) if args.max_memory else None
    plan = tiling.plan(model, lr.shape, args.scale, adaptive=args.adaptive, max_memory=max_memory,
                       tile=args.tile, out_dtype=out_dtype)
    rss_before = _vm("VmRSS")
    t0 = time.perf_counter()
    sr, classes = tiling.upscale(model, lr, args.scale, k=args.k, adaptive=args.adaptive, max_memory=max_memory,
                                 tile=args.tile, out_dtype=out_dtype)
    seconds = time.perf_counter() - t0
    heavy = float((classes < model.num_heavy).sum()) / classes.numel()
    if args.save:
        from PIL import Image

        if sr.dtype != torch.uint8:
            raise SystemExit("--save needs --out-dtype uint8")
        Image.fromarray(sr[0].permute(1, 2, 0).numpy()).save(args.save)
    print(json.dumps({
        "model": args.model, "lr": list(lr.shape[-2:]), "sr": list(sr.shape[-2:]), "out_dtype": str(sr.dtype),
        "adaptive": args.adaptive, "tiles": plan.tiles, "estimate_bytes": plan.estimate.total,
        "max_memory": max_memory, "seconds": round(seconds, 2), "heavy_fraction": round(heavy, 4),
        "rss_before_upscale": rss_before, "vm_hwm": _vm("VmHWM"), "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
