"""The ``pcsr`` command line: ``pcsr upscale``, ``pcsr eval`` here; the other subcommands
(``models``, ``bench``, ``sweep``, ``train``) live in their own modules, listed in
:data:`COMMANDS` and imported only when they run."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

DEFAULT_MODEL = "fsrcnn"


class UsageError(Exception):
    """A problem with the command's arguments or files: printed, exit code 2."""


def _add_routing(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--k", type=_finite, default=0.0,
                   help="cost-aware routing exponent: 0 = plain argmax, larger = more light pixels (default 0)")
    g.add_argument("--adaptive", action="store_true", help="adaptive decision (ADM, per-image K-means); k is ignored")
    p.add_argument("--no-refine", action="store_true", help="skip the pixel-wise refinement")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--backend", default=None, choices=["auto", "reference", "cpu", "triton", "cuda"],
                   help="kernel backend (default: $PCSR_BACKEND or auto)")
    p.add_argument("--precision", default=None, choices=["ieee", "tf32x3", "tf32", "bf16"],
                   help="upsampler MLP arithmetic of the triton backend (default: $PCSR_PRECISION or ieee)")


def _finite(text: str) -> float:
    """argparse type: a finite number (``nan`` and ``inf`` parse as floats, and mean nothing here)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def _bytes(text: str) -> int:
    """argparse type: a byte count such as 4G, 512M, 1.5G or 1000000 (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        v = float(t[: len(t) - len(unit)]) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 4G or 512M, got {text!r}") from None
    if not math.isfinite(v) or v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive size, got {text!r}")
    return int(v)


def _version() -> str:
    import platform

    import torch

    from . import __version__

    return f"pcsr {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


class _VersionAction(argparse.Action):
    """--version, composed only when asked (it imports torch)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


UPSCALE_EPILOG = """\
Outputs: one input and -o FILE: the extension chooses the format (.png, .jpg/.jpeg, .webp,
.tif/.tiff). Several inputs or a folder: -o is a folder (made if missing), each result named
<input stem><--suffix>.<--format>. Existing outputs are refused unless --overwrite or
--skip-existing; an output that would replace an input, two inputs with one output, or a
target that is a symlink or a device are always refused. Nothing is written when a run is
refused.

Videos (PyAV: pip install av) become videos: -o FILE.mp4|.mkv|.mov|.webm|.avi, or into a
folder with their own container (.mkv where it cannot be written). Frames are upscaled in
batches (--batch) and encoded with --codec/--crf/--preset/--pix-fmt; timestamps, colour
tags and rotation are kept and the audio is copied (re-encoded, and said, when the
container cannot hold it). --save-classes writes the routing as a video. Images and videos
can be mixed in one call: each input gives a file of its own kind.

Exit codes: 0 every image written (or skipped); 1 some images failed (each is reported, the
others were written); 2 refused before anything ran (arguments, paths, unreadable inputs
without --continue-on-error, model or backend unusable).

Across processes: torchrun --nproc_per_node N -m pcsr upscale IN_DIR -o OUT_DIR shards the
files (rank r takes files r, r+N, ...); add --skip-existing to resume a stopped run."""


# The subcommands: name -> (module that defines it, one-line help, extra keyword arguments
# of its parser). The CLI owns this table and imports a subcommand's module only when that
# subcommand is parsed, so `pcsr --help` imports no torch and the modules import the CLI
# (for UsageError and the shared options), never the other way round. Each module has
# add_arguments(p): it fills the subcommand's parser and sets ``func``.
COMMANDS: dict[str, tuple[str, str, dict]] = {
    "upscale": ("pcsr.cli", "upscale images with a PCSR model",
                {"epilog": UPSCALE_EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}),
    "eval": ("pcsr.cli", "evaluate a model on HR images with the paper's protocol", {}),
    "models": ("pcsr.catalog", "list the bundled models", {}),
    # bench's arguments are compare.py's own, passed through untouched ('+' is never used
    # as a prefix, so '--sizes' and '-h' reach compare.py instead of this parser).
    "bench": ("pcsr.bench", "time PCSR per backend against the reference, the authors' loop and the originals "
                            "(pcsr bench -h for options)", {"add_help": False, "prefix_chars": "+"}),
    "sweep": ("pcsr.sweep", "PSNR vs GFLOPs and vs time over k (and ADM), with plots", {}),
    "train": ("pcsr.train", "train a PCSR model (the authors' multi-stage recipe); torchrun for several processes", {}),
}


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The ``pcsr`` parser. ``commands``: the subcommands whose arguments are filled in
    (importing their modules); None: all of them. The others are listed with their help
    text and take no arguments."""
    import importlib

    parser = argparse.ArgumentParser(prog="pcsr", description="Pixel-level routed super-resolution (PCSR).")
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text, kwargs) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, **kwargs)
        if commands is None or name in commands:
            fill = _BUILTIN[name] if name in _BUILTIN else importlib.import_module(module).add_arguments
            fill(p)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), if any."""
    for a in argv:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def _upscale_arguments(up: argparse.ArgumentParser) -> None:
    up.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="images (PNG, JPEG, WebP, TIFF, BMP), videos (MP4, MKV, MOV, WebM, AVI, ...) or folders of them")
    up.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="output file (one input) or folder (several inputs, or a folder)")
    up.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name (see `pcsr models`) or checkpoint path (default {DEFAULT_MODEL})")
    up.add_argument("--scale", type=_finite, default=4.0, help="upscaling factor in (1/32, 64] (default 4)")
    _add_routing(up)
    up.add_argument("--tile", type=_positive_int, nargs="?", const=128, default=None, metavar="N",
                    help="run in tiles owning N x N LR pixels each (default N = 128); the output equals the "
                         "whole-image one. Without --tile, images run in tiles only when they would not fit "
                         "in --max-memory. Integer --scale")
    up.add_argument("--max-memory", type=_bytes, default=None, metavar="BYTES",
                    help="memory one image may take, e.g. 4G or 512M (default: half the available memory); "
                         "larger images run in tiles, and an image whose output alone cannot fit is refused")
    up.add_argument("--save-classes", metavar="PATH", help="also write a picture of the routing (one input: a file; several: a folder)")
    exist = up.add_mutually_exclusive_group()
    exist.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    exist.add_argument("--skip-existing", action="store_true", help="leave inputs whose output exists alone (resume a run)")
    up.add_argument("--suffix", default="", help="appended to the file names written into a folder, e.g. _x4 (for -o the input folder)")
    up.add_argument("--format", choices=["png", "jpg", "jpeg", "webp", "tif", "tiff"], default=None,
                    help="format of the images written into a folder (default png; videos keep their container)")
    up.add_argument("--quality", type=int, default=None, metavar="Q", help="JPEG / WebP quality 1-100 (default 95)")
    up.add_argument("--continue-on-error", action=argparse.BooleanOptionalAction, default=None,
                    help="report a failed image and go on (default: on for folders and several inputs)")
    up.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bars on stderr (default: when it is a terminal)")
    _add_device(up)
    from .video import add_arguments as _add_video

    _add_video(up)
    up.set_defaults(func=cmd_upscale)


def _eval_arguments(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("inputs", nargs="+", metavar="HR", help="HR images (or folders of them)")
    ev.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or PCSR checkpoint path")
    ev.add_argument("--original", help="the original (non-PCSR) model to compare with")
    ev.add_argument("--scale", type=int, default=4, help="integer scale (default 4)")
    _add_routing(ev)
    ev.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="timed calls per image and model, after the untimed first call whose output is "
                         "evaluated (it also prepares the model and compiles kernels); seconds = their median "
                         "(default 1; 0: no timing)")
    ev.add_argument("--json", metavar="FILE", help="write the records as JSON")
    _add_device(ev)
    ev.set_defaults(func=cmd_eval)


_BUILTIN = {"upscale": _upscale_arguments, "eval": _eval_arguments}


def _setup(args, shard=None):
    """The device (this rank's under torchrun) and the kernel backend, checked to be usable
    before anything is loaded: an unknown or unavailable backend is a usage error."""
    import torch

    import pcsr_kernels
    import pcsr_kernels.backend as kb

    if shard is not None:
        device = shard.device(args.device)
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    try:
        if args.backend:
            pcsr_kernels.set_backend(args.backend)
        kb.resolve(device.type)
    except (ValueError, RuntimeError) as e:
        msg = str(e)
        if args.backend:
            msg = f"--backend {args.backend}: {msg}"
        elif "PCSR_BACKEND" not in msg and os.environ.get("PCSR_BACKEND", "").strip():
            msg = f"PCSR_BACKEND={os.environ['PCSR_BACKEND'].strip()}: {msg}"
        raise UsageError(msg) from None
    if getattr(args, "precision", None):
        pcsr_kernels.set_precision(args.precision)
    try:
        pcsr_kernels.get_precision()  # an unknown PCSR_PRECISION is a usage error, before any work
    except ValueError as e:
        raise UsageError(str(e)) from None
    return device


def _load(name, device, what="--model"):
    from .checkpoint import CheckpointError, load

    try:
        return load(name, device)
    except (CheckpointError, FileNotFoundError) as e:
        msg = str(e)
        raise UsageError(f"{what}: {msg}" if str(name) in msg else f"{what} {name}: {msg}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        # a checkpoint whose config builds no model: the file is at fault, not the program
        raise UsageError(f"{what} {name}: unusable checkpoint ({type(e).__name__}: {e})") from None


def _expand_inputs(inputs: list[str]) -> list[Path]:
    from .targets import PlanError, expand_inputs

    try:
        return expand_inputs(inputs)[0]
    except PlanError as e:
        raise UsageError(str(e)) from None


def cmd_upscale(args) -> int:
    from .upscale import run

    return run(args)


def cmd_eval(args) -> int:
    from .evaluate import evaluate
    from .imageio import ImageError, check_writable, load_image

    inputs = _expand_inputs(args.inputs)
    if args.json:
        try:
            check_writable(args.json)
        except ImageError as e:
            raise UsageError(f"--json: {e}") from None
    if args.scale < 1:
        raise UsageError(f"--scale must be a positive integer, got {args.scale}")
    if args.repeat < 0:
        raise UsageError(f"--repeat must be >= 0, got {args.repeat}")
    device = _setup(args)
    model = _load(args.model, device)
    original = _load(args.original, device, "--original") if args.original else None
    records = []
    for p in inputs:
        try:
            hr = load_image(p).rgb
            rec = evaluate(model, hr, args.scale, k=args.k, adaptive=args.adaptive, refine=not args.no_refine,
                           original=original, repeat=args.repeat)
        except (ImageError, TypeError, ValueError) as e:
            raise UsageError(f"{p}: {e}") from None
        rec = {"image": str(p), **rec}
        records.append(rec)
    _print_table(records, original is not None)
    if args.repeat:
        print(f"seconds: model forward, median of {args.repeat} warm call{'s' * (args.repeat != 1)} per image "
              "(after one untimed call)")
    if args.json:
        _write_json(args.json, {"model": args.model, "original": args.original, "scale": args.scale, "k": args.k,
                                "adaptive": args.adaptive, "refine": not args.no_refine,
                                "timed_calls": args.repeat, "records": records})
    return 0


def _print_table(records: list[dict], with_original: bool) -> None:
    cols = [("image", "{}"), ("psnr", "{:.2f}"), ("gflops", "{:.2f}"), ("heavy_fraction", "{:.3f}"),
            ("seconds", "{:.3f}"), ("bicubic_psnr", "{:.2f}")]
    if with_original:
        cols += [("original_psnr", "{:.2f}"), ("original_gflops", "{:.2f}"), ("original_seconds", "{:.3f}"),
                 ("flops_ratio", "{:.3f}"), ("time_ratio", "{:.3f}")]
    def cell(v, fmt):
        return "-" if v is None else fmt.format(v)

    rows = [[cell(Path(r[c]).name if c == "image" else r[c], fmt) for c, fmt in cols] for r in records]
    if len(records) > 1:
        mean = ["mean"] + [cell(None if any(r[c] is None for r in records) else
                                sum(r[c] for r in records) / len(records), fmt) for c, fmt in cols[1:]]
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
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_of(argv)
    parser = build_parser([command] if command else [])
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
