"""``pcsr sweep``: the trade-off report. For a folder of HR images and a PCSR model, sweep
the routing exponent k (and ADM) and plot PSNR against GFLOPs and against measured time,
with the original network and bicubic as reference points.

Each image goes through the paper's protocol (:mod:`pcsr.evaluate`: centre crop to a
multiple of the scale, MATLAB-style bicubic LR, PSNR on RGB quantised to 8 bits, border
shaved). ``--crop`` first takes a centre crop of the HR image so that big photographs fit
a CPU's time. Times are the model's forward only, median of ``--repeat`` calls after one
warm-up call; points are means over the images.

Writes ``<prefix>sweep.csv`` (one row per image and point, then the means),
``<prefix>psnr_vs_gflops.png`` and ``<prefix>psnr_vs_time.png`` into ``--out-dir``.
"""
from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path

from . import cli

DEFAULT_KS = [-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0]
CSV_FIELDS = ["image", "point", "k", "adaptive", "refine", "psnr", "gflops", "seconds", "calls", "heavy_fraction",
              "height", "width", "backend", "device"]


def _parse_crop(s: str | None) -> tuple[int, int] | None:
    if s is None:
        return None
    try:
        if "x" in s:
            w, h = (int(v) for v in s.lower().split("x"))
        else:
            w = h = int(s)
    except ValueError:
        raise cli.UsageError(f"--crop: expected N or WxH, got {s!r}") from None
    if w <= 0 or h <= 0:
        raise cli.UsageError(f"--crop must be positive, got {s!r}")
    return h, w


def _timed(fn, repeat: int, device):
    """(output of the first timed call, median seconds) after one warm-up call."""
    from .evaluate import _sync

    fn()
    times, out = [], None
    for _ in range(max(1, repeat)):
        _sync(device)
        t0 = time.perf_counter()
        res = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        out = res if out is None else out
    return out, statistics.median(times)


def sweep_image(model, original, hr, scale: int, ks: list[float], adaptive: bool, refine: bool, repeat: int,
                device) -> list[dict]:
    """The points of one HR image [3, H, W]: bicubic, original (if any), each k, ADM."""
    import torch

    from .evaluate import centre_crop
    from .imresize import imresize
    from .metrics import psnr

    hr = centre_crop(hr.to(device=device, dtype=torch.float32), scale)[None]
    H, W = hr.shape[-2:]
    lr = imresize(hr, size=(H // scale, W // scale))
    common = {"height": H, "width": W, "calls": max(1, repeat)}
    bic, bic_s = _timed(lambda: imresize(lr, size=(H, W)), repeat, device)
    recs = [{"point": "bicubic", "psnr": psnr(bic, hr, shave=scale), "gflops": 0.0, "seconds": bic_s, **common}]
    if original is not None:
        sr, secs = _timed(lambda: original(lr), repeat, device)
        recs.append({"point": "original", "psnr": psnr(sr, hr, shave=scale),
                     "gflops": original.flops(lr.shape) / 1e9, "seconds": secs, **common})
    settings = [(f"k={k:g}", k, False) for k in ks] + ([("ADM", 0.0, True)] if adaptive else [])
    for name, k, adm in settings:
        (sr, classes), secs = _timed(lambda: model(lr, scale=scale, k=k, adaptive=adm, refine=refine), repeat, device)
        recs.append({"point": name, "k": "" if adm else k, "adaptive": int(adm), "refine": int(refine),
                     "psnr": psnr(sr, hr, shave=scale), "gflops": model.flops(lr.shape, classes) / 1e9,
                     "seconds": secs, "heavy_fraction": float((classes < model.num_heavy).float().mean()),
                     **common})
    return recs


def mean_points(records: list[dict]) -> list[dict]:
    """Mean of every point over the images, in the order the points first appear."""
    order = list(dict.fromkeys(r["point"] for r in records))
    out = []
    for p in order:
        rs = [r for r in records if r["point"] == p]
        m = {key: rs[0].get(key, "") for key in ("point", "k", "adaptive", "refine", "calls")}
        for key in ("psnr", "gflops", "seconds", "heavy_fraction"):
            vals = [r[key] for r in rs if r.get(key, "") != ""]
            m[key] = statistics.fmean(vals) if vals else ""
        m["image"] = f"mean of {len(rs)}"
        out.append(m)
    return out


def _k_labels(ks: list[dict], points: list[dict], x: str, xscale: float) -> list[tuple[tuple[float, float], str]]:
    """One label per group of k points that would print on top of each other (within 2 %
    of the x span and 4 % of the PSNR span of the plotted models): "k=2, 3, 5", placed at
    the group's first point."""
    shown = [p for p in points if p["point"] != "bicubic"]
    xs = [p[x] * xscale for p in shown]
    ys = [p["psnr"] for p in shown]
    xspan, yspan = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: list[list[dict]] = []
    for p in ks:
        g = groups[-1] if groups else None
        if g and abs(p[x] - g[0][x]) * xscale <= 0.02 * xspan and abs(p["psnr"] - g[0]["psnr"]) <= 0.04 * yspan:
            g.append(p)
        else:
            groups.append([p])
    return [((g[0][x] * xscale, g[0]["psnr"]), "k=" + ", ".join(q["point"][2:] for q in sorted(g, key=lambda q: float(q["k"]))))
            for g in groups]


def plot(points: list[dict], x: str, path: Path, title: str, xlabel: str, xscale: float = 1.0) -> None:
    """PSNR against ``x`` ('gflops' or 'seconds'): the k sweep as a labelled line, ADM and
    the original as single markers, bicubic as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
    # the k sweep in k order (largest k = fewest FLOPs first), so that noisy times do not
    # reorder the line
    ks = sorted((p for p in points if p["point"].startswith("k=")), key=lambda p: -float(p["k"]))
    if ks:
        ax.plot([p[x] * xscale for p in ks], [p["psnr"] for p in ks], "o-", color="tab:blue",
                label="PCSR, cost-aware routing (k)")
        for (px, py), label in _k_labels(ks, points, x, xscale):
            ax.annotate(label, (px, py), textcoords="offset points", xytext=(4, -11), fontsize=8, color="tab:blue")
    for name, style, label in (("ADM", dict(marker="D", color="tab:green"), "PCSR, adaptive (ADM)"),
                               ("original", dict(marker="*", color="tab:red", markersize=14), "original model")):
        for p in points:
            if p["point"] == name:
                ax.plot([p[x] * xscale], [p["psnr"]], linestyle="none", label=label, **style)
    # Bicubic is usually several dB below everything else: drawing it to scale would squash
    # the differences the plot is about, so the axis keeps to the models and bicubic is a
    # line when it falls inside, else a legend entry that gives its PSNR.
    models = [p["psnr"] for p in points if p["point"] != "bicubic"]
    lo, hi = (min(models), max(models)) if models else (0.0, 1.0)
    pad = max(0.05, 0.15 * (hi - lo))
    for p in points:
        if p["point"] != "bicubic":
            continue
        if p["psnr"] >= lo - 3 * pad:
            ax.axhline(p["psnr"], color="gray", linestyle="--", label=f"bicubic ({p['psnr']:.2f} dB)")
            lo = min(lo, p["psnr"])
        else:
            ax.plot([], [], color="gray", linestyle="--", label=f"bicubic: {p['psnr']:.2f} dB (below the axis)")
    if models:
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR (dB, RGB)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(path)


def cmd_sweep(args) -> int:
    from .imageio import ImageError, load_image
    from .model import PCSR, SRModel

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise cli.UsageError("pcsr sweep draws its plots with matplotlib: pip install matplotlib") from None
    ks = list(dict.fromkeys(args.k))
    crop = _parse_crop(args.crop)
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        raise cli.UsageError(f"--out-dir {out_dir}: not an existing folder")
    if args.scale < 1:
        raise cli.UsageError(f"--scale must be a positive integer, got {args.scale}")
    inputs = cli._expand_inputs(args.inputs)[: args.max_images or None]
    device = cli._setup(args)
    model = cli._load(args.model, device)
    if not isinstance(model, PCSR):
        raise cli.UsageError(f"--model {args.model}: not a PCSR model")
    original = cli._load(args.original, device, "--original") if args.original else None
    if original is not None and not isinstance(original, SRModel):
        raise cli.UsageError(f"--original {args.original}: not a plain SR model")
    if original is not None and original.scale != args.scale:
        raise cli.UsageError(f"--original upscales x{original.scale}, but the sweep is at x{args.scale}")
    import pcsr_kernels.backend as kb

    backend = kb.resolved_name(device.type)
    records = []
    for p in inputs:
        try:
            hr = load_image(p).rgb
        except ImageError as e:
            raise cli.UsageError(str(e)) from None
        if crop is not None:
            ch, cw = min(crop[0], hr.shape[1]), min(crop[1], hr.shape[2])
            top, left = (hr.shape[1] - ch) // 2, (hr.shape[2] - cw) // 2
            hr = hr[:, top:top + ch, left:left + cw]
        try:
            recs = sweep_image(model, original, hr, args.scale, ks, not args.no_adaptive, not args.no_refine,
                               args.repeat, device)
        except ValueError as e:
            raise cli.UsageError(f"{p}: {e}") from None
        for r in recs:
            r.update(image=p.name, backend=backend, device=device.type)
            print(f"{p.name}  {r['point']:9s}  {r['psnr']:6.2f} dB  {r['gflops']:9.2f} GFLOPs  "
                  f"{1e3 * r['seconds']:9.1f} ms")
        records += recs
    means = mean_points(records)
    orig = next((m for m in means if m["point"] == "original"), None)
    print(f"times: model forward, median of {max(1, args.repeat)} warm call{'s' * (max(1, args.repeat) != 1)} "
          "per point (after one untimed call)")
    if len(inputs) > 1 or orig is not None:
        print(f"mean over {len(inputs)} image(s)" + ("; ratios to the original" if orig else ""))
    for m in means:
        m.update(backend=backend, device=device.type)
        if orig is not None and m["point"] not in ("original", "bicubic"):
            print(f"  {m['point']:9s}  {m['psnr']:6.2f} dB  {m['gflops']:9.2f} GFLOPs "
                  f"({m['gflops'] / orig['gflops']:.2f})  {1e3 * m['seconds']:9.1f} ms ({m['seconds'] / orig['seconds']:.2f})")
    prefix = args.prefix or ""
    write_csv(out_dir / f"{prefix}sweep.csv", records + means)

    name = f"{model.config['backbone'].upper().replace('SRRESNET', 'SRResNet')}-PCSR ({Path(args.model).stem})"
    if args.original:
        name += f" vs {Path(args.original).stem}"
    sizes = {(r["width"], r["height"]) for r in records}
    size_txt = "%dx%d" % next(iter(sizes)) if len(sizes) == 1 else "various sizes"
    where = f"{len(inputs)} image{'s' * (len(inputs) != 1)}, HR {size_txt}, x{args.scale}"
    plot(means, "gflops", out_dir / f"{prefix}psnr_vs_gflops.png",
         f"{name}\nPSNR vs FLOPs per image ({where})", "GFLOPs per image (paper's counting rules)")
    plot(means, "seconds", out_dir / f"{prefix}psnr_vs_time.png",
         f"{name}\nPSNR vs wall time ({where}; {backend} backend, {kb_device_name(device)})",
         "time per image (ms, model forward, median)", xscale=1e3)
    print(f"wrote {out_dir / (prefix + 'sweep.csv')}, {prefix}psnr_vs_gflops.png, {prefix}psnr_vs_time.png")
    return 0


def kb_device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def add_arguments(p) -> None:
    p.add_argument("inputs", nargs="+", metavar="HR", help="HR images (or folders of them)")
    p.add_argument("--model", default=cli.DEFAULT_MODEL, help="bundled model name or PCSR checkpoint path")
    p.add_argument("--original", help="the original (non-PCSR) model, drawn as a reference point")
    p.add_argument("--scale", type=int, default=4, help="integer scale (default 4)")
    p.add_argument("--k", type=float, nargs="+", default=DEFAULT_KS, metavar="K",
                   help=f"k values to sweep (default {' '.join(f'{k:g}' for k in DEFAULT_KS)})")
    p.add_argument("--no-adaptive", action="store_true", help="leave out the ADM point")
    p.add_argument("--no-refine", action="store_true", help="skip the pixel-wise refinement")
    p.add_argument("--crop", metavar="N|WxH", help="centre crop of each HR image first (e.g. 1024 or 2048x1152)")
    p.add_argument("--max-images", type=int, default=0, help="use at most this many images (0: all)")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per point, median (default 3)")
    p.add_argument("--out-dir", required=True, help="existing folder for the CSV and the two PNGs")
    p.add_argument("--prefix", default="", help="prefix of the output file names")
    cli._add_device(p)
    p.set_defaults(func=cmd_sweep)
