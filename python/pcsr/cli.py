"""The ``pcsr`` command line: ``pcsr upscale``, ``pcsr eval`` (more subcommands register
themselves in ``COMMANDS``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODEL = "fsrcnn"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


class UsageError(Exception):
    """A problem with the command's arguments or files: printed, exit code 2."""


def _add_routing(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--k", type=float, default=0.0,
                   help="cost-aware routing exponent: 0 = plain argmax, larger = more light pixels (default 0)")
    g.add_argument("--adaptive", action="store_true", help="adaptive decision (ADM, per-image K-means); k is ignored")
    p.add_argument("--no-refine", action="store_true", help="skip the pixel-wise refinement")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--backend", default=None, choices=["auto", "reference", "cpu", "triton", "cuda"],
                   help="kernel backend (default: $PCSR_BACKEND or auto)")
    p.add_argument("--precision", default=None, choices=["ieee", "tf32x3", "tf32", "bf16"],
                   help="upsampler MLP arithmetic of the triton backend (default: $PCSR_PRECISION or ieee)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcsr", description="Pixel-level routed super-resolution (PCSR).")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upscale", help="upscale images with a PCSR model")
    up.add_argument("inputs", nargs="+", metavar="INPUT", help="PNG/JPEG/WebP images")
    up.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="output PNG (one input) or an existing folder (several inputs)")
    up.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name or checkpoint path (default {DEFAULT_MODEL})")
    up.add_argument("--scale", type=float, default=4.0, help="upscaling factor (default 4)")
    _add_routing(up)
    up.add_argument("--tile", action="store_true", help="overlapping-tile inference (32x32 LR tiles, stride 28) for huge images")
    up.add_argument("--save-classes", metavar="PATH", help="also write a picture of the routing (one input: a PNG; several: a folder)")
    _add_device(up)
    up.set_defaults(func=cmd_upscale)

    ev = sub.add_parser("eval", help="evaluate a model on HR images with the paper's protocol")
    ev.add_argument("inputs", nargs="+", metavar="HR", help="HR images (or folders of them)")
    ev.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or PCSR checkpoint path")
    ev.add_argument("--original", help="the original (non-PCSR) model to compare with")
    ev.add_argument("--scale", type=int, default=4, help="integer scale (default 4)")
    _add_routing(ev)
    ev.add_argument("--json", metavar="FILE", help="write the records as JSON")
    _add_device(ev)
    ev.set_defaults(func=cmd_eval)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list = []
from . import bench, sweep  # noqa: E402,F401  (each appends its subcommand to _EXTRA_COMMANDS)

from .train import register as _register_train  # noqa: E402
_EXTRA_COMMANDS.append(_register_train)


def _setup(args):
    import torch

    import pcsr_kernels

    if args.backend:
        pcsr_kernels.set_backend(args.backend)
    if getattr(args, "precision", None):
        pcsr_kernels.set_precision(args.precision)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(device)


def _load(name, device, what="--model"):
    from .checkpoint import CheckpointError, load

    try:
        return load(name, device)
    except (CheckpointError, FileNotFoundError) as e:
        raise UsageError(f"{what}: {e}") from None


def _expand_inputs(inputs: list[str]) -> list[Path]:
    out = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            files = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UsageError(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out += files
        elif p.exists():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return out


def cmd_upscale(args) -> int:
    import torch
    from tqdm import tqdm

    from .imageio import ImageError, check_writable, read_image, write_classes, write_png
    from .imresize import imresize
    from .model import PCSR

    inputs = _expand_inputs(args.inputs)
    out = Path(args.output)
    if len(inputs) > 1:
        if not out.is_dir():
            raise UsageError(f"-o {out}: with several inputs the output must be an existing folder")
        targets = [out / (p.stem + ".png") for p in inputs]
    else:
        targets = [out / (inputs[0].stem + ".png")] if out.is_dir() else [out]
    class_targets = [None] * len(inputs)
    if args.save_classes:
        cs = Path(args.save_classes)
        if len(inputs) > 1 or cs.is_dir():
            if not cs.is_dir():
                raise UsageError(f"--save-classes {cs}: with several inputs it must be an existing folder")
            class_targets = [cs / (p.stem + "_classes.png") for p in inputs]
        else:
            class_targets = [cs]
    try:
        for t in targets + [c for c in class_targets if c is not None]:
            check_writable(t)
    except ImageError as e:
        raise UsageError(str(e)) from None
    if not (args.scale > 0 and args.scale < 64):
        raise UsageError(f"--scale must be in (0, 64), got {args.scale}")

    device = _setup(args)
    model = _load(args.model, device)
    if not isinstance(model, PCSR):
        raise UsageError(f"--model {args.model}: not a PCSR model (a plain {model.config['backbone']} checkpoint)")
    bar = tqdm(total=len(inputs), unit="img", disable=len(inputs) < 2 and not args.tile, file=sys.stderr)
    for src, dst, cdst in zip(inputs, targets, class_targets):
        try:
            img = read_image(src)
        except ImageError as e:
            raise UsageError(str(e)) from None
        lr = img.rgb[None].to(device)
        if args.tile:
            if not float(args.scale).is_integer():
                raise UsageError("--tile needs an integer --scale")
            tiles = _tile_count(lr.shape[-2], lr.shape[-1])
            with tqdm(total=tiles, unit="tile", desc=src.name, leave=False, file=sys.stderr) as tb:
                sr, classes = model.forward_tiled(lr, int(args.scale), k=args.k, adaptive=args.adaptive,
                                                  refine=not args.no_refine, progress=tb.update)
        else:
            sr, classes = model(lr, scale=args.scale, k=args.k, adaptive=args.adaptive, refine=not args.no_refine)
        sr = sr[0].clamp(0, 1).cpu()
        alpha = None
        if img.alpha is not None:
            alpha = imresize(img.alpha, size=tuple(sr.shape[-2:])).clamp(0, 1)
        write_png(dst, sr, alpha, img.grey)
        if cdst is not None:
            write_classes(cdst, classes[0], model.num_branches, sr)
        bar.update(1)
        heavy = float((classes < model.num_heavy).float().mean())
        print(f"{src} -> {dst} ({sr.shape[-1]}x{sr.shape[-2]}, {100 * heavy:.1f}% heavy pixels)")
    bar.close()
    return 0


def _tile_count(h: int, w: int) -> int:
    from .model import TILE, TILE_STRIDE, _tile_starts

    return len(_tile_starts(h, TILE, TILE_STRIDE)) * len(_tile_starts(w, TILE, TILE_STRIDE))


def cmd_eval(args) -> int:
    from .evaluate import evaluate
    from .imageio import ImageError, check_writable, read_image

    inputs = _expand_inputs(args.inputs)
    if args.json:
        try:
            check_writable(args.json)
        except ImageError as e:
            raise UsageError(f"--json: {e}") from None
    if args.scale < 1:
        raise UsageError(f"--scale must be a positive integer, got {args.scale}")
    device = _setup(args)
    model = _load(args.model, device)
    original = _load(args.original, device, "--original") if args.original else None
    records = []
    for p in inputs:
        try:
            hr = read_image(p).rgb
            rec = evaluate(model, hr, args.scale, k=args.k, adaptive=args.adaptive, refine=not args.no_refine,
                           original=original)
        except (ImageError, TypeError, ValueError) as e:
            raise UsageError(f"{p}: {e}") from None
        rec = {"image": str(p), **rec}
        records.append(rec)
    _print_table(records, original is not None)
    if args.json:
        _write_json(args.json, {"model": args.model, "original": args.original, "scale": args.scale, "k": args.k,
                                "adaptive": args.adaptive, "refine": not args.no_refine, "records": records})
    return 0


def _print_table(records: list[dict], with_original: bool) -> None:
    cols = [("image", "{}"), ("psnr", "{:.2f}"), ("gflops", "{:.2f}"), ("heavy_fraction", "{:.3f}"),
            ("seconds", "{:.3f}"), ("bicubic_psnr", "{:.2f}")]
    if with_original:
        cols += [("original_psnr", "{:.2f}"), ("original_gflops", "{:.2f}"), ("original_seconds", "{:.3f}"),
                 ("flops_ratio", "{:.3f}"), ("time_ratio", "{:.3f}")]
    rows = [[fmt.format(Path(r[c]).name if c == "image" else r[c]) for c, fmt in cols] for r in records]
    if len(records) > 1:
        mean = ["mean"] + [fmt.format(sum(r[c] for r in records) / len(records)) for c, fmt in cols[1:]]
        rows.append(mean)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, (c, _) in enumerate(cols)]
    print("  ".join(c.ljust(wd) for (c, _), wd in zip(cols, widths)))
    for row in rows:
        print("  ".join(v.ljust(wd) for v, wd in zip(row, widths)))


def _write_json(path: str, obj) -> None:
    from .atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"pcsr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pcsr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
