"""``torch.ops.pcsr.route_upsample`` per provider, against the compute floor.

    python benchmarks/bench_route_upsample.py                                   # 1k..8k, all variants, GPU
    python benchmarks/bench_route_upsample.py --sizes 4k --variants carn,srresnet --csv bench.csv
    python benchmarks/bench_route_upsample.py --device cpu --sizes 32x32 --variants fsrcnn --providers reference,triton

Providers: ``reference`` (the pure-PyTorch path), ``official-style`` (the authors' loop
re-stated, ``benchmarks/official_style.py``: Python ``torch.where`` gathers, ``nn.Linear``
chains, chunks of 300000), ``triton`` and ``cuda`` (the project's backends). A provider
that is missing is skipped with the reason. On CPU the Triton provider runs under the
interpreter (``TRITON_INTERPRET=1`` is set before any kernel is imported): slow, only to
show the script works end to end.

Inputs (``workloads.py``): each variant's widths (FSRCNN-PCSR D=48, heavy 4x58, light
3x10, classifier []; CARN-PCSR D=52, 4x74, 3x20, [10, 10]; SRResNet-PCSR D=58, 4x170,
3x40, [20, 20]), the authors' weights where present, otherwise random ones whose
classifier is shifted so that ``--heavy-fraction`` of the pixels go to the heavy branch at
k = 0; the features are the variant's backbone applied to a natural image at LR size.

For every (variant, size): each provider's result is first checked against the
reference (``workloads.agreement``); one that disagrees is reported and not timed. Then
medians and p20/p80 by ``triton.testing.do_bench`` on the GPU (``time.perf_counter`` on the
CPU), and the peak memory of one more call. ``floor_ms`` is the compute floor: the
routed GFLOPs as the paper counts them (classifier on every pixel, each pixel's own branch,
``pcsr.flops``) over the dense fp32 matmul rate measured on the same device at the same
precision (``torch.mm`` in fp32, TF32 or bf16 as ``--precision`` / ``PCSR_PRECISION`` says).

Output: a table on stdout; with ``--csv`` (default ``benchmarks/results/route_upsample.csv``)
one row per measurement appended (op, provider, device, size, variant, median_ms, p20, p80,
torch/triton versions, ...).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # siblings (workloads, timing, official_style) import by name
    sys.path.insert(0, str(_HERE))

PROVIDERS = ("reference", "official-style", "triton", "cuda")
CSV_FIELDS = ["op", "provider", "device", "device_name", "size", "height", "width", "variant", "weights", "k",
              "adaptive", "refine", "precision", "median_ms", "p20_ms", "p80_ms", "peak_mb", "heavy_fraction",
              "gflops", "floor_ms", "x_floor", "speedup_vs_official", "speedup_vs_reference",
              "torch", "triton", "commit", "timestamp"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1k,2k,4k,8k", help="outputs (x4): 1k,2k,4k,8k or WxH (default all four)")
    p.add_argument("--variants", default="fsrcnn,carn,srresnet", help="fsrcnn,carn,srresnet (default all)")
    p.add_argument("--providers", default=",".join(PROVIDERS), help=f"subset of {','.join(PROVIDERS)}")
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    p.add_argument("--k", type=float, default=0.0)
    p.add_argument("--adaptive", action="store_true", help="ADM routing instead of cost-aware")
    p.add_argument("--no-refine", dest="refine", action="store_false")
    p.add_argument("--weights", default="auto", choices=("auto", "official", "random"))
    p.add_argument("--heavy-fraction", type=float, default=0.5, help="with random weights (default 0.5)")
    p.add_argument("--precision", default=None, help="ieee, tf32x3, tf32 or bf16 (default: $PCSR_PRECISION or ieee)")
    p.add_argument("--rep-ms", type=float, default=500.0, help="do_bench time budget per measurement")
    p.add_argument("--csv", default=str(_HERE / "results" / "route_upsample.csv"), help="'' for none")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    provs = [s.strip() for s in args.providers.split(",") if s.strip()]
    for s in provs:
        if s not in PROVIDERS:
            raise SystemExit(f"unknown provider {s!r}; choose from {', '.join(PROVIDERS)}")
    if device.type == "cpu" and "triton" in provs:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is decorated

    import pcsr_kernels
    from pcsr import flops as pflops
    from pcsr_kernels import backend

    import timing
    import workloads as wl

    env = timing.environment(device)
    if args.precision:
        pcsr_kernels.set_precision(args.precision)
    precision = pcsr_kernels.get_precision()
    runnable = {}
    for name in provs:
        if name == "official-style":
            loop = wl.official_loop()
            if loop is None:
                print(f"# skipping official-style: {wl.official_error()}")
                continue
            runnable[name] = wl.route_upsample_fn("official")
        else:
            ok, why = backend.availability(name, device.type)
            if not ok:
                print(f"# skipping {name}: {why}")
                continue
            runnable[name] = wl.route_upsample_fn(name)
    if "reference" not in runnable:
        runnable = {"reference": wl.route_upsample_fn("reference"), **runnable}  # for the check only
        timed_reference = False
    else:
        timed_reference = True

    def bench(fn):
        if device.type == "cuda":
            import triton.testing

            med, p20, p80 = triton.testing.do_bench(fn, warmup=max(25.0, args.rep_ms / 10), rep=args.rep_ms,
                                                    quantiles=[0.5, 0.2, 0.8])
            return med, p20, p80
        st = timing.measure(fn, device, repeat=5, warmup=1, min_repeat=2, budget_s=args.rep_ms / 1e3)
        return st.ms

    rate = matmul_rate(device, precision, bench)
    print(f"# {env['device_name']}, torch {env['torch']}, triton {env['triton']}, precision {precision}, "
          f"dense matmul {rate / 1e12:.2f} TFLOP/s")
    rows = []
    for vkey in [v.strip() for v in args.variants.split(",") if v.strip()]:
        v = wl.parse_variant(vkey)
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            label, H, W = wl.parse_size(size)
            with torch.no_grad():
                model, src = wl.build_pcsr(v, args.weights, device)
                lr, _ = wl.make_lr(H // wl.SCALE, W // wl.SCALE, device)
                if src == "random":
                    wl.calibrate_heavy_fraction(model, lr, args.heavy_fraction)
                x = model.normalise(lr)
                feat = model._inference_backbone()(x)
                margs = {k: ([t.detach() for t in a] if isinstance(a, list) and a and torch.is_tensor(a[0]) else a)
                         for k, a in wl.model_args(model, feat).items()}
            call = dict(k=args.k, adaptive=args.adaptive, refine=args.refine)
            ref_sr, ref_cls = runnable["reference"](feat, x, (H, W), **margs, **call)
            counts = torch.bincount(ref_cls.flatten(), minlength=len(margs["depths"])).tolist()
            gflops = (pflops.mlp_flops(model.classifier.widths, H * W)
                      + sum(pflops.mlp_flops(u.widths, int(n)) for u, n in zip(model.upsamplers, counts))) / 1e9
            floor_ms = gflops * 1e9 / rate * 1e3
            heavy = counts[0] / max(1, sum(counts))
            times = {}
            for name, ru in runnable.items():
                if name == "reference" and not timed_reference:
                    continue
                fn = lambda ru=ru: ru(feat, x, (H, W), **margs, **call)  # noqa: E731
                with torch.no_grad():
                    sr, cls = fn()
                    ok, msg = wl.agreement(sr, cls, ref_sr, ref_cls)
                    del sr, cls
                    if not ok:
                        print(f"# {name} {v.name} {label}: DISAGREES with the reference ({msg}); not timed")
                        continue
                    med, p20, p80 = bench(fn)
                    peak = timing.peak_memory(fn, device) / 2**20
                times[name] = med
                rows.append(dict(op="route_upsample", provider=name, device=device.type, device_name=env["device_name"],
                                 size=label, height=H, width=W, variant=v.name, weights=src, k=args.k,
                                 adaptive=args.adaptive, refine=args.refine,
                                 precision=precision if name == "triton" else "fp32",
                                 median_ms=med, p20_ms=p20, p80_ms=p80, peak_mb=peak, heavy_fraction=heavy,
                                 gflops=gflops, floor_ms=floor_ms, x_floor=med / floor_ms,
                                 torch=env["torch"], triton=env["triton"], commit=env["commit"],
                                 timestamp=datetime.datetime.now().isoformat(timespec="seconds")))
            for r in rows:
                if r["variant"] == v.name and r["size"] == label:
                    r["speedup_vs_official"] = times["official-style"] / r["median_ms"] if "official-style" in times else ""
                    r["speedup_vs_reference"] = times["reference"] / r["median_ms"] if "reference" in times else ""
            del feat, x, lr, ref_sr, ref_cls, model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(table(rows))
    if args.csv and rows:
        append_csv(args.csv, rows)
        print(f"# {len(rows)} rows appended to {args.csv}")
    return 0


def matmul_rate(device, precision: str, bench) -> float:
    """Dense matmul FLOP/s of ``torch.mm`` on this device in the arithmetic of ``precision``
    (fp32 for ieee, TF32 for tf32 and tf32x3 -- whose floor is three of these --, bf16)."""
    import torch

    n = 8192 if device.type == "cuda" else 512
    dt = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision in ("tf32", "tf32x3")
    try:
        ms = bench(lambda: torch.mm(a, b))[0]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * n ** 3 / (ms / 1e3) / (3 if precision == "tf32x3" else 1)


def _f(x, fmt):
    return fmt.format(x) if isinstance(x, (int, float)) else "-"


def table(rows) -> str:
    head = ("| variant | size | provider | median ms | p20 | p80 | peak MB | heavy % | GFLOP | floor ms | x floor "
            "| vs official | vs reference |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append("| " + " | ".join([
            r["variant"], r["size"], r["provider"], _f(r["median_ms"], "{:.2f}"), _f(r["p20_ms"], "{:.2f}"),
            _f(r["p80_ms"], "{:.2f}"), _f(r["peak_mb"], "{:.0f}"), _f(100 * r["heavy_fraction"], "{:.1f}"),
            _f(r["gflops"], "{:.1f}"), _f(r["floor_ms"], "{:.2f}"), _f(r["x_floor"], "{:.1f}"),
            _f(r.get("speedup_vs_official"), "{:.1f}x"), _f(r.get("speedup_vs_reference"), "{:.1f}x")]) + " |")
    return "\n".join(out)


def append_csv(path, rows) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    t0 = time.time()
    rc = main()
    print(f"# done in {time.time() - t0:.0f} s")
    sys.exit(rc)
