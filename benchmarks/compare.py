"""End-to-end and per-stage times of PCSR on every backend present, beside the pure-PyTorch
path, the authors' inference loop and the original (non-PCSR) networks.

    python benchmarks/compare.py --sizes 2k --variants fsrcnn,carn --csv bench.csv
    pcsr bench --sizes 1k,2k,4k,8k --device cuda --csv bench.csv

For every variant and output size:

1. correctness first: every PCSR provider's ``route_upsample`` on a crop, and its full-size
   end-to-end output (the untimed warm-up call), against the pure-PyTorch reference; a
   provider that disagrees is reported and not timed;
2. end to end (``e2e``): the original network, and PCSR (backbone + upsampling stage) per
   provider, timed in interleaved rounds (one call of each per round) so that a slow
   drift of the machine hits all of them alike; the ratios to the original are taken
   within the run;
3. per stage: the backbone, the fused ``route_upsample`` per provider, and per backend the
   separate ops ``classify``, ``route`` (cost-aware, and ADM), ``upsample``, ``refine``;
4. peak memory of each end-to-end path, taken during its warm-up call (see ``timing.py``).

Providers: ``cpu`` / ``triton`` / ``cuda`` (the project's backends, when available for the
device), ``reference`` (pure PyTorch), ``official`` (``official_style.py``: Python
``torch.where`` gathers, ``nn.Linear`` chains, chunks of 300000, unfold refinement) and
``original`` (the non-PCSR network). A provider that is not there is skipped with the
reason. GFLOPs follow the paper's counting rules (``pcsr.flops``).

Output: markdown tables on stdout; with ``--csv`` one row per measurement appended to the
file (the header is written when the file is new).

``--e2e`` measures something else: frames per second of PCSR and its original network as
``compile_for`` prepares them (CUDA graphs on a GPU), per variant x precision x size x
batch, with the paper's and the executed FLOPs; see ``e2e.py``.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # siblings (timing, workloads, official_style) import by name
    sys.path.insert(0, str(_HERE))

import torch  # noqa: E402

import pcsr_kernels  # noqa: E402
from pcsr import flops as pflops  # noqa: E402
from pcsr.model import _meta_flops  # noqa: E402

import timing  # noqa: E402
import workloads as wl  # noqa: E402

CSV_FIELDS = ["op", "backend", "model", "variant", "size", "height", "width", "device", "device_name",
              "k", "adaptive", "refine", "precision", "weights", "median_ms", "p20_ms", "p80_ms", "n", "gflops",
              "gflop_per_s", "peak_mb", "heavy_fraction", "time_ratio", "flops_ratio",
              "batch", "mode", "fps", "gflops_real", "real_flops_ratio",
              "torch", "triton", "commit", "timestamp"]
PCSR_PROVIDERS = ("cpu", "triton", "cuda", "reference", "official")
ALL_PROVIDERS = PCSR_PROVIDERS + ("original",)
STAGE_OPS = ("classify", "route", "route_adm", "upsample", "refine")
CROP_LR = (40, 56)  # LR crop (h, w) of the quick correctness check: 160x224 output pixels


# --- arguments --------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--sizes", default=None,
                   help="output sizes: 1k (1280x800), 2k (2560x1600), 4k (3840x2160), 8k (7680x4320) or WxH; "
                        "default 2k on CPU (the slow paths take minutes there), 1k,2k,4k,8k on CUDA")
    p.add_argument("--variants", default=None,
                   help="fsrcnn, carn, srresnet; default fsrcnn,carn on CPU, all three on CUDA")
    p.add_argument("--providers", default=None,
                   help=f"subset of {','.join(ALL_PROVIDERS)} (default: every one available)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--k", type=float, default=0.0, help="routing exponent k (default 0)")
    p.add_argument("--adaptive", action="store_true", help="route with ADM instead of k")
    p.add_argument("--no-refine", action="store_true", help="skip the pixel-wise refinement")
    p.add_argument("--precision", default=None, choices=list(pcsr_kernels.PRECISIONS),
                   help="upsampler MLP arithmetic of the triton backend (default: $PCSR_PRECISION or ieee); "
                        "the other paths compute exactly")
    p.add_argument("--weights", default="auto", choices=["auto", "official", "random"],
                   help="auto: the authors' checkpoints where present, else random (default)")
    p.add_argument("--heavy-fraction", type=float, default=0.5,
                   help="with random weights: fraction of pixels routed heavy at k=0 (default 0.5)")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds (default 5 on CPU, 20 on CUDA)")
    p.add_argument("--min-repeat", type=int, default=3, help="rounds kept even past --budget (default 3)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per group of measurements after which rounds stop (default 40 on CPU, 10 on CUDA)")
    p.add_argument("--no-stages", action="store_true", help="skip the per-stage timings")
    p.add_argument("--no-memory", action="store_true", help="do not sample the memory during the warm-up calls")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs")
    p.add_argument("--e2e", action="store_true",
                   help="frames per second of PCSR and the original, compiled for the shape (CUDA graphs on a "
                        "GPU), per variant x precision x size x batch (e2e.py); default sizes 1k on CPU, 4k on CUDA")
    p.add_argument("--precisions", default=None,
                   help="--e2e: comma-separated precisions (default: --precision, else ieee on CPU, "
                        "bf16,tf32,ieee on CUDA)")
    p.add_argument("--batch", default=None, help="--e2e: comma-separated batch sizes (default 1 on CPU, 1,2,4 on CUDA)")
    p.add_argument("--no-graph", action="store_true", help="--e2e on CUDA: prepared eager calls, no CUDA graphs")
    p.add_argument("--csv", metavar="FILE", help="append one row per measurement to FILE")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    return p


# --- correctness ------------------------------------------------------------------------------

@torch.no_grad()
def check_crop(model, lr, provs, args, log) -> dict[str, str]:
    """Every provider's ``route_upsample`` against the reference on a crop of the input,
    before anything is timed: {provider: why} for those that disagree or fail. (At full
    size the end-to-end warm-up call is compared too, see ``bench_one``.)"""
    rkw = dict(k=args.k, adaptive=args.adaptive, refine=not args.no_refine)
    h, w = lr.shape[-2:]
    ch, cw = min(h, CROP_LR[0]), min(w, CROP_LR[1])
    x = model.normalise(lr[..., :ch, :cw].contiguous())
    size = (ch * wl.SCALE, cw * wl.SCALE)
    feat = model._inference_backbone()(x)
    margs = wl.model_args(model, feat)
    ref_sr, ref_cls = wl.route_upsample_fn("reference")(feat, x, size, **margs, **rkw)
    failed: dict[str, str] = {}
    for p in provs:
        if p == "reference":
            continue
        try:
            sr, cls = wl.route_upsample_fn(p)(feat, x, size, **margs, **rkw)
            ok, msg = wl.agreement(sr, cls, ref_sr, ref_cls)
        except Exception as e:  # noqa: BLE001 -- any failure means: do not time it
            ok, msg = False, f"{type(e).__name__}: {e}"
        log(f"  check {p:9s} crop {size[1]}x{size[0]}: {'ok' if ok else 'FAILED'} ({msg})")
        if not ok:
            failed[p] = f"crop: {msg}"
    return failed


# --- measurements -----------------------------------------------------------------------------

@dataclass
class Row:
    op: str
    backend: str
    model: str
    stats: timing.Stats
    gflops: float | None = None
    peak_mb: float | None = None
    heavy: float | None = None
    time_ratio: float | None = None
    flops_ratio: float | None = None


def interleaved(fns: dict, device, repeat, min_repeat, budget, keep=None, memory=False
                ) -> tuple[dict, dict, dict]:
    """Time several callables in rounds (one call of each per round) after a warm-up round.

    ``keep(name, output of the warm-up call) -> (ok, value)``: a callable whose warm-up
    output is not ok is not timed. Returns ({name: Stats} of those timed, {name: value},
    {name: peak MB of the warm-up call} (empty unless ``memory``))."""
    fns = dict(fns)
    kept, peak = {}, {}
    for n, fn in list(fns.items()):
        box = []
        if memory:
            peak[n] = timing.peak_memory(lambda: box.append(fn()), device) / 2 ** 20
        else:
            box.append(fn())
        if keep is not None:
            ok, kept[n] = keep(n, box[0])
            if not ok:
                del fns[n]
        del box
    timing.sync(device)
    samples = {n: [] for n in fns}
    spent = 0.0
    for r in range(max(1, repeat)):
        for n, fn in fns.items():
            dt = timing.measure(fn, device, repeat=1, warmup=0).median
            samples[n].append(dt)
            spent += dt
        if budget is not None and r + 1 >= min_repeat and spent >= budget:
            break
    stats = {n: timing.Stats(statistics.median(s), timing._quantile(s, 0.2), timing._quantile(s, 0.8), len(s), s)
             for n, s in samples.items()}
    return stats, kept, peak


def _pcsr_flops(model, lr_shape, classes) -> float:
    return model.flops(lr_shape, classes) / 1e9


def bench_one(v, size, device, provs, args, log) -> tuple[list[Row], dict]:
    """Check and time one (variant, size). ``provs``: the providers to time."""
    label, H, W = size
    h, w = H // wl.SCALE, W // wl.SCALE
    model, msrc = wl.build_pcsr(v, args.weights, device)
    lr, img_src = wl.make_lr(h, w, device)
    if msrc == "random":
        wl.calibrate_heavy_fraction(model, lr, args.heavy_fraction)
    pcsr_provs = [p for p in provs if p in PCSR_PROVIDERS]
    rkw = dict(k=args.k, adaptive=args.adaptive, refine=not args.no_refine)
    log(f"[{v.name} {label}: {W}x{H} from {w}x{h}, weights {msrc}, input {img_src}]")

    failed = check_crop(model, lr, pcsr_provs, args, log)
    pcsr_provs = [p for p in pcsr_provs if p not in failed]
    rows: list[Row] = []
    meta = {"weights": msrc, "input": img_src, "failed": failed}

    # end to end, all paths interleaved; the reference's warm-up call comes first among the
    # PCSR paths so that every other path's warm-up output is checked against it
    fns = {}
    original = None
    if "original" in provs:
        original, osrc = wl.build_original(v, args.weights, device)
        meta["weights"] = msrc if osrc == msrc else f"{msrc} (PCSR), {osrc} (original)"
        fns["original"] = lambda: original(lr)
    for p in sorted(pcsr_provs, key=lambda p: p != "reference"):
        f = wl.pcsr_end_to_end(model, p)
        fns[p] = (lambda f=f: f(lr, (H, W), **rkw))
    log(f"  e2e: {', '.join(fns)}")
    ref = {}

    def keep(name, out):  # check against the reference; keep the routing for FLOPs and heavy %
        if name == "original":
            return True, None
        sr, cls = out
        if name == "reference":
            ref["sr"], ref["cls"] = sr, cls
            return True, cls
        if "sr" not in ref:
            return True, cls
        ok, msg = wl.agreement(sr, cls, ref["sr"], ref["cls"])
        log(f"  check {name:9s} full {W}x{H} (e2e warm-up): {'ok' if ok else 'FAILED'} ({msg})")
        if not ok:
            failed[name] = f"full: {msg}"
        return ok, cls
    stats, classes, peak = interleaved(fns, device, args.repeat, args.min_repeat, args.budget, keep,
                                       memory=not args.no_memory)
    ref.clear()
    pcsr_provs = [p for p in pcsr_provs if p not in failed]
    o_stats = stats.get("original")
    o_gflops = original.flops(lr.shape) / 1e9 if original is not None else None
    if original is not None:
        rows.append(Row("e2e", "torch", v.original_name, o_stats, o_gflops, time_ratio=1.0, flops_ratio=1.0))
    for p in pcsr_provs:
        cls = classes[p]
        if cls is None:  # a provider that returns no classes: count with the reference's decision
            cls = next((c for c in classes.values() if c is not None), None)
        g = _pcsr_flops(model, lr.shape, cls) if cls is not None else None
        heavy = float((cls < model.num_heavy).double().mean()) if cls is not None else None
        s = stats[p]
        rows.append(Row("e2e", p, v.name, s, g, heavy=heavy,
                        time_ratio=s.median / o_stats.median if o_stats else None,
                        flops_ratio=g / o_gflops if (o_gflops and g) else None))
    del classes
    for r in rows:
        r.peak_mb = peak.get("original" if r.backend == "torch" else r.backend)

    if not args.no_stages and pcsr_provs:
        rows += bench_stages(model, lr, (H, W), pcsr_provs, device, args, log)
    return rows, meta


@torch.no_grad()
def bench_stages(model, lr, out_size, provs, device, args, log) -> list[Row]:
    rkw = dict(k=args.k, adaptive=args.adaptive, refine=not args.no_refine)
    H, W = out_size
    x = model.normalise(lr)
    backbone = model._inference_backbone()
    feat = backbone(x)
    margs = wl.model_args(model, feat)
    M = model.num_branches
    rows = []
    bb_gflops = _meta_flops(model.backbone, lr.shape) / 1e9
    log("  stages: backbone, route_upsample per provider")
    fns = {"backbone": lambda: backbone(x)}
    for p in provs:
        f = wl.route_upsample_fn(p)
        fns[p] = (lambda f=f: f(feat, x, out_size, **margs, **rkw))
    st, _, _ = interleaved(fns, device, args.repeat, args.min_repeat, args.budget)
    rows.append(Row("backbone", "torch", model.config["backbone"], st.pop("backbone"), bb_gflops))

    # inputs of the separate ops: the reference's intermediate results
    with pcsr_kernels.use_backend("reference"):
        probs = pcsr_kernels.classify(feat, out_size, margs["classifier"])
        classes = pcsr_kernels.route(probs, margs["cost"], args.k, args.adaptive)
        sr0 = pcsr_kernels.upsample(feat, x, classes, margs["upsamplers"], margs["depths"])
    counts = torch.bincount(classes.flatten(), minlength=M).tolist()
    cls_g = pflops.mlp_flops(model.classifier.widths, H * W) / 1e9
    up_g = sum(pflops.mlp_flops(u.widths, int(n)) for u, n in zip(model.upsamplers, counts)) / 1e9
    for p, s in st.items():
        rows.append(Row("route_upsample", p, model.config["backbone"] + "-pcsr", s, cls_g + up_g))

    ops = {
        "classify": (lambda: pcsr_kernels.classify(feat, out_size, margs["classifier"]), cls_g),
        "route": (lambda: pcsr_kernels.route(probs, margs["cost"], args.k, False), None),
        "route_adm": (lambda: pcsr_kernels.route(probs, margs["cost"], 0.0, True), None),
        "upsample": (lambda: pcsr_kernels.upsample(feat, x, classes, margs["upsamplers"], margs["depths"]), up_g),
        "refine": (lambda: pcsr_kernels.refine(sr0, classes, M), None),
    }
    for p in provs:
        if p == "official":  # the authors' loop is one piece; it has no separate ops
            continue
        log(f"  stages: {', '.join(ops)} on {p}")

        st, _, _ = interleaved({n: wl.under_backend(p, fn) for n, (fn, _) in ops.items()}, device, args.repeat,
                               args.min_repeat, args.budget)
        for n, (_, g) in ops.items():
            rows.append(Row(n, p, model.config["backbone"] + "-pcsr", st[n], g))
    return rows


# --- output --------------------------------------------------------------------------------------

def _f(x, fmt="{:.1f}"):
    return "" if x is None else fmt.format(x)


def markdown_tables(results: list[tuple], env: dict, args) -> str:
    """results: [(variant, (label, H, W), rows, meta)]."""
    out = []
    routing = "ADM" if args.adaptive else f"k={args.k:g}"
    out.append(f"device: {env['device_name']}; torch {env['torch']}, triton {env['triton'] or '-'}; "
               f"commit {env['commit']}; routing {routing}, refine {'off' if args.no_refine else 'on'}; "
               f"triton precision {pcsr_kernels.get_precision()}\n")
    names = {"torch": "original", "cpu": "PCSR, cpu backend (C++)", "triton": "PCSR, triton backend",
             "cuda": "PCSR, cuda backend", "reference": "PCSR, pure PyTorch (reference)",
             "official": "PCSR, authors' loop (official_style)"}
    out.append("| variant | output | path | median ms | p20-p80 ms | time / original | GFLOPs | FLOPs / original "
               "| GFLOP/s | heavy % | peak MB |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v, (label, H, W), rows, meta in results:
        for r in rows:
            if r.op != "e2e":
                continue
            med, p20, p80 = r.stats.ms
            path = f"{r.model} (original)" if r.backend == "torch" else names.get(r.backend, r.backend)
            gps = r.gflops / r.stats.median if r.gflops else None
            out.append(f"| {v.name} | {label} ({W}x{H}) | {path} | {med:.0f} | {p20:.0f}-{p80:.0f} | "
                       f"{_f(r.time_ratio, '{:.2f}')} | {_f(r.gflops)} | {_f(r.flops_ratio, '{:.2f}')} | "
                       f"{_f(gps)} | {_f(None if r.heavy is None else 100 * r.heavy)} | {_f(r.peak_mb, '{:.0f}')} |")
    notes = []
    for v, (label, H, W), rows, meta in results:
        notes.append(f"- {v.name} {label}: weights {meta['weights']}, LR input resized from {meta['input']}"
                     + "".join(f"; **{p} not timed**, failed the check ({why})" for p, why in meta["failed"].items()))
    out.append("\n" + "\n".join(notes))
    stage_rows = [r for *_, rows, _ in results for r in rows if r.op != "e2e"]
    if stage_rows:
        out.append("\nPer stage, median ms (p20-p80); backbone is shared by all PCSR paths; "
                   "the separate ops take the reference's intermediate results as inputs.\n")
        cols = ("backbone", "route_upsample") + STAGE_OPS
        out.append("| variant | output | backend | " + " | ".join(cols) + " |")
        out.append("|---|---|---|" + "---:|" * len(cols))
        for v, (label, H, W), rows, meta in results:
            bb = next((r for r in rows if r.op == "backbone"), None)
            backends = [r.backend for r in rows if r.op == "route_upsample"]
            for b in backends:
                cells = []
                for c in cols:
                    r = bb if c == "backbone" else next((r for r in rows if r.op == c and r.backend == b), None)
                    if r is None:
                        cells.append("")
                    else:
                        med, p20, p80 = r.stats.ms
                        cells.append(f"{med:.1f} ({p20:.1f}-{p80:.1f})")
                out.append(f"| {v.name} | {label} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def csv_rows(results, env, args, device) -> list[dict]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for v, (label, H, W), rows, meta in results:
        for r in rows:
            med, p20, p80 = r.stats.ms
            out.append({
                "op": r.op, "backend": r.backend, "model": r.model, "variant": v.key, "size": label,
                "height": H, "width": W, "device": torch.device(device).type, "device_name": env["device_name"],
                "k": args.k, "adaptive": int(args.adaptive), "refine": int(not args.no_refine),
                "precision": pcsr_kernels.get_precision() if r.backend == "triton" else "fp32",
                "weights": meta["weights"],
                "median_ms": f"{med:.3f}", "p20_ms": f"{p20:.3f}", "p80_ms": f"{p80:.3f}", "n": r.stats.n,
                "gflops": _f(r.gflops, "{:.4f}"),
                "gflop_per_s": _f(r.gflops / r.stats.median if r.gflops else None, "{:.2f}"),
                "peak_mb": _f(r.peak_mb, "{:.1f}"), "heavy_fraction": _f(r.heavy, "{:.4f}"),
                "time_ratio": _f(r.time_ratio, "{:.4f}"), "flops_ratio": _f(r.flops_ratio, "{:.4f}"),
                "torch": env["torch"], "triton": env["triton"], "commit": env["commit"], "timestamp": now,
            })
    return out


def append_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append ``rows``; a file written before a column was added gets the new header, its
    old rows an empty cell there (the triton rows before ``precision`` existed ran
    ``ieee``, the only mode then: that is filled in)."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != CSV_FIELDS:
            with open(path, newline="") as f:
                old = list(csv.DictReader(f))
            for r in old:
                if "precision" not in header:
                    r["precision"] = "ieee" if r.get("backend") == "triton" else "fp32"
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
                w.writeheader()
                w.writerows(old)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)


# --- entry point ------------------------------------------------------------------------------------

def run(args) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("compare: --device cuda but no CUDA device is available")
    on_cpu = device.type == "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision:
        pcsr_kernels.set_precision(args.precision)
    args.repeat = args.repeat or (5 if on_cpu else 20)
    args.budget = args.budget if args.budget is not None else (40.0 if on_cpu else 10.0)
    if args.e2e:
        return run_e2e(args, device)
    sizes = [wl.parse_size(s) for s in (args.sizes or ("2k" if on_cpu else "1k,2k,4k,8k")).split(",")]
    variants = [wl.parse_variant(s) for s in (args.variants or ("fsrcnn,carn" if on_cpu else
                                                                "fsrcnn,carn,srresnet")).split(",")]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    avail, missing = wl.providers(device.type)
    avail.append("original")
    wanted = [p.strip() for p in args.providers.split(",")] if args.providers else list(ALL_PROVIDERS)
    for p in wanted:
        if p not in ALL_PROVIDERS:
            raise SystemExit(f"compare: unknown provider {p!r}; choose from {', '.join(ALL_PROVIDERS)}")
        if p not in avail and (args.providers or p in missing):
            log(f"skipping provider {p}: {missing.get(p, 'not available for ' + device.type + ' tensors')}")
    provs = [p for p in wanted if p in avail]
    env = timing.environment(device)
    log(f"device {env['device_name']}; timing: {', '.join(provs)}")

    results = []
    with torch.no_grad():
        for v in variants:
            for size in sizes:
                rows, meta = bench_one(v, size, device, provs, args, log)
                results.append((v, size, rows, meta))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    table = markdown_tables(results, env, args)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.csv:
        append_csv(args.csv, csv_rows(results, env, args, device))
        log(f"appended {sum(len(rows) for _, _, rows, _ in results)} rows to {args.csv}")
    return 0


def run_e2e(args, device) -> int:
    import e2e

    on_cpu = device.type == "cpu"
    try:
        args.sizes_list = [s for s in (args.sizes or ("1k" if on_cpu else "4k")).split(",")]
        for s in args.sizes_list:
            wl.parse_size(s)
        args.variants_list = (args.variants or "fsrcnn,carn,srresnet").split(",")
        for s in args.variants_list:
            wl.parse_variant(s)
        precs = args.precisions or args.precision or ("ieee" if on_cpu else "bf16,tf32,ieee")
        args.precisions_list = [pcsr_kernels.precision.check(p.strip(), "--precisions") for p in precs.split(",")]
        args.batch_list = [int(b) for b in (args.batch or ("1" if on_cpu else "1,2,4")).split(",")]
    except ValueError as e:
        raise SystemExit(f"compare --e2e: {e}") from None
    if any(b < 1 for b in args.batch_list):
        raise SystemExit(f"compare --e2e: --batch sizes must be >= 1, got {args.batch}")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    env = timing.environment(device)
    log(f"device {env['device_name']}; e2e: {', '.join(args.variants_list)} x {', '.join(args.sizes_list)} x "
        f"{', '.join(args.precisions_list)} x batch {', '.join(map(str, args.batch_list))}")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def emit(pair):  # each measured pair is appended at once: a time limit keeps what was done
        if args.csv:
            append_csv(args.csv, e2e.csv_rows(pair, env, args, device, now))
    rows = e2e.bench_e2e(args, device, env, log, emit)
    table = e2e.markdown(rows, env, args)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.csv and rows:
        log(f"appended {len(rows)} rows to {args.csv}")
    return 0


def main(argv: list[str] | None = None, prog: str = "compare.py") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].replace("\n", " "))
    return run(add_arguments(p).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
