"""The Triton ``route_upsample`` per variant x output size x precision on a GPU, beside the
device's ceilings and the authors' loop: what ``scripts/gpu_checks.sh`` runs.

    python benchmarks/gpu_precision.py --sizes 4k,2k --csv benchmarks/results/compare_cuda.csv --out gpu_out

1. ceilings: device-to-device copy bandwidth (2 x 2 GiB), dense 8192^3 matmul rate in
   bf16, TF32 and fp32 (``torch.mm``);
2. per (variant, size): the model (the authors' checkpoints where present:
   ``PCSR_OFFICIAL_DIR`` or ../shared; random weights routed ``--heavy-fraction`` heavy
   otherwise), features from its backbone on a natural LR image, the fp32 reference's
   result once, the authors' loop (``official_style.py``) timed once per size; then per
   precision: the output checked first (classes: at most 1e-3 differ; the MLP residual's
   relative error within PLAN.md section 4's bound of the mode), then timed with
   ``triton.testing.do_bench`` (median, p20, p80), eagerly and as a CUDA-graph replay;
3. floor = executed GFLOPs (the paper's counting: classifier on every pixel, each
   pixel's own branch) over the measured matmul rate of the mode's arithmetic (fp32 for
   ieee, TF32/3 for tf32x3, TF32, bf16);
4. a per-kernel profiler table of one call (``--profile``);
5. one row per measurement appended to ``--csv`` at once (compare.py's columns, op
   ``route_upsample``, backend ``triton``, the precision, the commit: ``+dirty`` when the
   code differs from it), and a summary table printed last.

The default precision is to be chosen from these rows: the most accurate mode whose 4K
time is within 2x of the fastest mode's, for every variant.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import pcsr_kernels  # noqa: E402
from pcsr import flops as pflops  # noqa: E402

import compare  # noqa: E402
import timing  # noqa: E402
import workloads as wl  # noqa: E402

ORDER = ("bf16", "tf32", "tf32x3", "ieee")  # fastest first, so that a time limit keeps the figures that matter
REL_BOUND = {"ieee": 1e-5, "tf32x3": 1e-5, "tf32": 2e-3, "bf16": 1e-2}
RATE_OF = {"ieee": "fp32", "tf32x3": "tf32/3", "tf32": "tf32", "bf16": "bf16"}


def log(msg):
    print(msg, flush=True)


DEVICE = torch.device("cuda")


def do_bench(fn, rep_ms):
    if DEVICE.type != "cuda":  # the CPU dry run (interpreter): one timed call
        return timing.measure(fn, DEVICE, repeat=1, warmup=0).ms
    import triton.testing

    return triton.testing.do_bench(fn, warmup=max(25.0, rep_ms / 10), rep=rep_ms, quantiles=[0.5, 0.2, 0.8])


def ceilings(rep_ms) -> dict:
    out = {}
    n = 1 << 29 if DEVICE.type == "cuda" else 1 << 16  # 2 GiB of fp32
    a = torch.empty(n, device=DEVICE)
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), rep_ms)[0]
    out["copy_GBps"] = 2 * 4 * n / (ms / 1e3) / 1e9
    del a, b
    m = 8192 if DEVICE.type == "cuda" else 256
    old = torch.backends.cuda.matmul.allow_tf32
    for name, dt, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True),
                           ("fp32", torch.float32, False)):
        x = torch.randn(m, m, device=DEVICE, dtype=dt)
        y = torch.randn(m, m, device=DEVICE, dtype=dt)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            ms = do_bench(lambda: torch.mm(x, y), rep_ms)[0]
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
        out[f"{name}_TFLOPs"] = 2 * m ** 3 / (ms / 1e3) / 1e12
    out["tf32/3_TFLOPs"] = out["tf32_TFLOPs"] / 3
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
    return out


def residual_error(sr, sr_ref, lr, cls, cls_ref) -> float:
    H, W = sr.shape[-2:]
    base = F.interpolate(lr.float(), size=(H, W), mode="bilinear", align_corners=False)
    same = (cls == cls_ref)
    ok = (-F.max_pool2d(-F.pad(same[:, None].float(), (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0] > 0)
    ok = ok[:, None].expand_as(sr)
    d = (sr.double() - sr_ref.double())[ok]
    r = (sr_ref.double() - base.double())[ok]
    return float(d.norm() / r.norm())


def graph_of(fn):
    """fn captured in a CUDA graph (after two eager warm-up calls); returns replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="4k,2k")
    p.add_argument("--variants", default="fsrcnn,carn,srresnet")
    p.add_argument("--precisions", default=",".join(ORDER))
    p.add_argument("--heavy-fraction", type=float, default=0.3)
    p.add_argument("--weights", default="auto", choices=("auto", "official", "random"))
    p.add_argument("--rep-ms", type=float, default=200.0)
    p.add_argument("--csv", default="")
    p.add_argument("--out", default=".", help="folder for the profiler table")
    p.add_argument("--profile", default="carn:4k:bf16,carn:4k:ieee", help="variant:size:precision list, '' for none")
    p.add_argument("--no-official", action="store_true", help="do not time the authors' loop")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run every step on CPU tensors through Triton's interpreter (tiny --sizes): checks the script")
    args = p.parse_args(argv)
    global DEVICE
    if args.cpu_dry_run:
        import os

        os.environ.setdefault("TRITON_INTERPRET", "1")
        DEVICE = torch.device("cpu")
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_precision.py needs a CUDA device (or --cpu-dry-run)")
    dev = DEVICE
    env = timing.environment(dev)
    log(f"# {env['device_name']}; torch {env['torch']}, triton {env['triton']}, commit {env['commit']}")
    ceil = ceilings(args.rep_ms)
    log("# ceilings: " + ", ".join(f"{k} {v:.1f}" for k, v in ceil.items()))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    profiles = {tuple(s.split(":")) for s in args.profile.split(",") if s}
    summary = []
    stamp = lambda: datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731

    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        label, H, W = wl.parse_size(size)
        for vkey in [v.strip() for v in args.variants.split(",") if v.strip()]:
            v = wl.parse_variant(vkey)
            with torch.no_grad():
                model, src = wl.build_pcsr(v, args.weights, dev)
                lr, _ = wl.make_lr(H // wl.SCALE, W // wl.SCALE, dev)
                if src == "random":
                    wl.calibrate_heavy_fraction(model, lr, args.heavy_fraction)
                x = model.normalise(lr)
                feat = model._inference_backbone()(x)
                margs = {k: ([t.detach() for t in a] if isinstance(a, list) and a and torch.is_tensor(a[0]) else a)
                         for k, a in wl.model_args(model, feat).items()}
                call = dict(k=0.0, adaptive=False, refine=True)
                sr_ref, cls_ref = wl.route_upsample_fn("reference")(feat, x, (H, W), **margs, **call)
                counts = torch.bincount(cls_ref.flatten(), minlength=len(margs["depths"])).tolist()
                gflops = (pflops.mlp_flops(model.classifier.widths, H * W)
                          + sum(pflops.mlp_flops(u.widths, int(n)) for u, n in zip(model.upsamplers, counts))) / 1e9
                heavy = counts[0] / max(1, sum(counts))
                official_ms = None
                if not args.no_official and wl.official_loop() is not None:
                    f = wl.route_upsample_fn("official")
                    official_ms = do_bench(lambda: f(feat, x, (H, W), **margs, **call), args.rep_ms)[0]
                if official_ms and args.csv:
                    compare.append_csv(args.csv, [dict(
                        op="route_upsample", backend="official", model=v.name, variant=v.key, size=label, height=H,
                        width=W, device=dev.type, device_name=env["device_name"], k=0.0, adaptive=0, refine=1,
                        precision="fp32", weights=src, median_ms=f"{official_ms:.4f}", gflops=f"{gflops:.4f}",
                        heavy_fraction=f"{heavy:.4f}", torch=env["torch"], triton=env["triton"], commit=env["commit"],
                        timestamp=stamp())])
                log(f"## {v.name} {label} ({W}x{H}), weights {src}, heavy {100 * heavy:.1f} %, {gflops:.1f} GFLOP, "
                    f"authors' loop {official_ms if official_ms is None else round(official_ms, 2)} ms")
            for prec in [s.strip() for s in args.precisions.split(",") if s.strip()]:
                fn = lambda prec=prec: pcsr_kernels.route_upsample(feat, x, (H, W), **margs, **call,  # noqa: E731
                                                                   precision=prec)
                with torch.no_grad(), pcsr_kernels.use_backend("triton"):
                    try:
                        t0 = time.time()
                        sr, cls = fn()
                        timing.sync(dev)
                        first_s = time.time() - t0
                        mism = float((cls != cls_ref).double().mean())
                        err = residual_error(sr, sr_ref, x, cls, cls_ref)
                        ok = mism <= 1e-3 and err <= REL_BOUND[prec] * 1.5 + 1e-6
                        del sr, cls
                    except Exception as e:  # noqa: BLE001 -- report, do not time
                        log(f"  {prec}: FAILED {type(e).__name__}: {str(e)[:300]}")
                        continue
                    if not ok:
                        log(f"  {prec}: WRONG (class mismatch {mism:.1e}, residual error {err:.1e}); not timed")
                        continue
                    med, p20, p80 = do_bench(fn, args.rep_ms)
                    try:
                        g_med = do_bench(graph_of(fn), args.rep_ms)[0] if dev.type == "cuda" else None
                    except Exception as e:  # noqa: BLE001
                        log(f"  {prec}: graph capture failed: {type(e).__name__}: {str(e)[:200]}")
                        g_med = None
                    if (vkey, size, prec) in profiles:
                        from torch.profiler import ProfilerActivity, profile

                        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
                        with profile(activities=acts) as prof:
                            fn()
                            timing.sync(dev)
                        table = prof.key_averages().table(
                            sort_by="cuda_time_total" if dev.type == "cuda" else "cpu_time_total", row_limit=25)
                        (out_dir / f"profile_{vkey}_{size}_{prec}.txt").write_text(table)
                        log(table)
                floor = gflops / ceil[f"{RATE_OF[prec]}_TFLOPs"]  # GFLOP / (TFLOP/s) = ms
                row = dict(op="route_upsample", backend="triton", model=v.name, variant=v.key, size=label, height=H,
                           width=W, device=dev.type, device_name=env["device_name"], k=0.0, adaptive=0, refine=1,
                           precision=prec, weights=src, median_ms=f"{med:.4f}", p20_ms=f"{p20:.4f}",
                           p80_ms=f"{p80:.4f}", n="", gflops=f"{gflops:.4f}", gflop_per_s=f"{gflops / med * 1e3:.2f}",
                           peak_mb="", heavy_fraction=f"{heavy:.4f}",
                           time_ratio="", flops_ratio="",
                           torch=env["torch"], triton=env["triton"], commit=env["commit"], timestamp=stamp())
                if args.csv:
                    compare.append_csv(args.csv, [row])
                summary.append((v.name, label, prec, med, g_med, official_ms, floor, err, mism, first_s))
                log(f"  {prec:6s} {med:8.3f} ms (graph {g_med if g_med is None else round(g_med, 3)}), "
                    f"floor {floor:.3f} ms, x{med / floor:.1f}, vs authors' loop "
                    f"{'-' if not official_ms else f'{official_ms / med:.1f}x'}, residual err {err:.1e}, "
                    f"class mismatch {mism:.1e}, first call {first_s:.1f} s")
            del feat, x, lr, sr_ref, cls_ref, model
            if dev.type == "cuda":
                torch.cuda.empty_cache()

    log("\n| variant | size | precision | ms | graph ms | x floor | vs authors' loop | residual err | class mism |")
    log("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, label, prec, med, g_med, off, floor, err, mism, _ in summary:
        log(f"| {name} | {label} | {prec} | {med:.3f} | {'-' if g_med is None else f'{g_med:.3f}'} | "
            f"{med / floor:.1f} | {'-' if not off else f'{off / med:.1f}x'} | {err:.1e} | {mism:.1e} |")
    log("ceilings: " + ", ".join(f"{k} {v:.1f}" for k, v in ceil.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
