"""End-to-end frames per second: PCSR beside its original network at the same precision,
per variant x precision x output size x batch (``pcsr bench --e2e``).

    pcsr bench --e2e --sizes 1k --variants fsrcnn,carn,srresnet --csv benchmarks/results/compare_cpu.csv
    pcsr bench --e2e --sizes 4k --precisions bf16,ieee --batch 1,2,4,8 --csv benchmarks/results/compare_cuda.csv

Both networks run as :meth:`compile_for` prepares them for the input's shape: on CUDA one
CUDA graph per (network, shape, precision), replayed; on the CPU the prepared eager call
(the backbone in the device's fastest form, :mod:`pcsr.inference`). Before anything is
timed, each compiled call is checked against the plain eager model at the same precision
(PCSR: :func:`workloads.agreement`; the original: relative L2 error <= 1e-4, 2e-2 in bf16),
each item of a batch against batch 1's. Then PCSR and the original at every precision of
the run are timed together in interleaved rounds (one call of each per round), so that
every ratio -- PCSR / original, bf16 / ieee -- is taken within one run. A time is one call on the whole batch (the input already on
the device; uploads are :func:`pcsr.frames.stream_batches`' business); fps = batch / time.

FLOPs, both per call: ``gflops`` by the paper's rules (:mod:`pcsr.flops`), ``gflops_real``
what is executed (:mod:`pcsr.real_flops`: a transposed convolution at its real
multiply-adds, BatchNorm folded, PCSR's first MLP layers at LR resolution). The paper
charges FSRCNN's stride-4 transposed convolution 16x its real work, so FSRCNN-PCSR's
paper FLOP ratio (~0.4) promises a saving that its real ratio (> 1) rules out.
"""
from __future__ import annotations

import statistics

import torch

import pcsr_kernels
from pcsr.real_flops import network_real_flops, pcsr_real_flops

import timing
import workloads as wl

ORIGINAL_BOUND = {"bf16": 2e-2}  # relative L2 error of the compiled original vs eager; others 1e-4


def _interleaved(fns: dict, device, repeat: int, min_repeat: int, budget: float) -> dict:
    samples = {n: [] for n in fns}
    spent = 0.0
    for r in range(max(1, repeat)):
        for n, fn in fns.items():
            dt = timing.measure(fn, device, repeat=1, warmup=0).median
            samples[n].append(dt)
            spent += dt
        if r + 1 >= min_repeat and spent >= budget:
            break
    return {n: timing.Stats(statistics.median(s), timing._quantile(s, 0.2), timing._quantile(s, 0.8), len(s), s)
            for n, s in samples.items()}


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@torch.no_grad()
def bench_e2e(args, device, env, log, emit=None) -> list[dict]:
    """Rows for every (variant, size, batch, precision). The precisions of one (variant, size,
    batch) are timed together, PCSR and original, in one interleaved run, so that their
    ratios are taken within it too; ``emit(rows)`` is called as soon as such a group is
    measured (a run stopped by a time limit keeps what it did)."""
    sizes = [wl.parse_size(s) for s in args.sizes_list]
    variants = [wl.parse_variant(s) for s in args.variants_list]
    precisions = args.precisions_list
    batches = args.batch_list
    graph = device.type == "cuda" and not args.no_graph
    mode = "graph" if graph else "eager"
    rkw = dict(k=args.k, adaptive=args.adaptive, refine=not args.no_refine)
    backend = pcsr_kernels.backend.resolved_name(device.type)
    rows = []
    for v in variants:
        model, msrc = wl.build_pcsr(v, args.weights, device)
        original, osrc = wl.build_original(v, args.weights, device)
        weights = msrc if osrc == msrc else f"{msrc} (PCSR), {osrc} (original)"
        for label, H, W in sizes:
            h, w = H // wl.SCALE, W // wl.SCALE
            lr1, src = wl.make_lr(h, w, device)
            if msrc == "random":
                wl.calibrate_heavy_fraction(model, lr1, args.heavy_fraction)
            # the eager model at each precision: what the compiled calls are checked against
            refs = {p: (*model(lr1, out_size=(H, W), precision=p, **rkw), original(lr1, precision=p))
                    for p in precisions}
            for B in batches:
                lr = lr1.expand(B, -1, -1, -1).contiguous()
                runs, info = {}, {}
                for prec in precisions:
                    tag = f"{v.name} {label} {prec} batch {B} ({mode})"
                    try:
                        run_p = model.compile_for(lr.shape, out_size=(H, W), precision=prec, graph=graph, **rkw)
                        run_o = original.compile_for(lr.shape, precision=prec, graph=graph)
                        sr, cls = run_p(lr)
                        so = run_o(lr)
                    except Exception as e:  # noqa: BLE001 - report, do not time
                        log(f"  {tag}: FAILED to compile or run ({type(e).__name__}: {str(e)[:300]})")
                        continue
                    ref_sr, ref_cls, ref_o = refs[prec]
                    checks = [wl.agreement(sr[i:i + 1], cls[i:i + 1], ref_sr, ref_cls) for i in range(B)]
                    err_o = max(_rel(so[i:i + 1], ref_o) for i in range(B))
                    ok_p, ok_o = all(ok for ok, _ in checks), err_o <= ORIGINAL_BOUND.get(prec, 1e-4)
                    log(f"  check {tag}: PCSR {'ok' if ok_p else 'FAILED'} ({checks[-1][1]}); "
                        f"original rel. error {err_o:.1e} {'ok' if ok_o else 'FAILED'}")
                    if not (ok_p and ok_o):
                        continue
                    runs[prec] = (run_p, run_o)
                    info[prec] = dict(heavy=float((cls < model.num_heavy).double().mean()),
                                      g_p=model.flops(lr.shape, cls) / 1e9, g_o=original.flops(lr.shape) / 1e9,
                                      r_p=pcsr_real_flops(model, lr.shape, cls) / 1e9,
                                      r_o=network_real_flops(original, lr.shape) / 1e9)
                    del sr, cls, so
                if not runs:
                    continue
                fns = {}
                for prec, (run_p, run_o) in runs.items():
                    fns[("pcsr", prec)] = lambda r=run_p: r(lr, copy=False)
                    fns[("original", prec)] = lambda r=run_o: r(lr, copy=False)
                stats = _interleaved(fns, device, args.repeat, args.min_repeat, args.budget)
                group = []
                for prec, d in info.items():
                    sp, so_ = stats[("pcsr", prec)], stats[("original", prec)]
                    ratio = sp.median / so_.median
                    log(f"  {v.name} {label} {prec} batch {B} ({mode}): PCSR {1e3 * sp.median:.2f} ms "
                        f"({B / sp.median:.1f} fps), original {1e3 * so_.median:.2f} ms ({B / so_.median:.1f} fps), "
                        f"time ratio {ratio:.3f}, FLOP ratio paper {d['g_p'] / d['g_o']:.3f} real "
                        f"{d['r_p'] / d['r_o']:.3f}")
                    common = dict(variant=v.key, size=label, height=H, width=W, precision=prec, weights=weights,
                                  batch=B, mode=mode)
                    group.append(dict(common, op="e2e_fps", backend=backend, model=v.name, stats=sp, gflops=d["g_p"],
                                      gflops_real=d["r_p"], heavy=d["heavy"], time_ratio=ratio,
                                      flops_ratio=d["g_p"] / d["g_o"], real_flops_ratio=d["r_p"] / d["r_o"]))
                    group.append(dict(common, op="e2e_fps", backend="torch", model=v.original_name, stats=so_,
                                      gflops=d["g_o"], gflops_real=d["r_o"], heavy=None, time_ratio=1.0,
                                      flops_ratio=1.0, real_flops_ratio=1.0))
                rows += group
                if emit is not None:
                    emit(group)
                del runs, fns
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _f(x, fmt):
    return "" if x is None else fmt.format(x)


def markdown(rows: list[dict], env: dict, args) -> str:
    routing = "ADM" if args.adaptive else f"k={args.k:g}"
    out = [f"device: {env['device_name']}; torch {env['torch']}, triton {env['triton'] or '-'}; commit "
           f"{env['commit']}; routing {routing}, refine {'off' if args.no_refine else 'on'}\n",
           "| variant | output | precision | batch | mode | path | ms per call | fps | time / original | "
           "GFLOPs paper | real | FLOPs / original paper | real | heavy % |",
           "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        med = 1e3 * r["stats"].median
        out.append(f"| {r['variant']} | {r['size']} ({r['width']}x{r['height']}) | {r['precision']} | {r['batch']} | "
                   f"{r['mode']} | {r['model']} | {med:.1f} | {r['batch'] / r['stats'].median:.2f} | "
                   f"{r['time_ratio']:.3f} | {r['gflops']:.1f} | {r['gflops_real']:.1f} | {r['flops_ratio']:.3f} | "
                   f"{r['real_flops_ratio']:.3f} | {_f(None if r['heavy'] is None else 100 * r['heavy'], '{:.1f}')} |")
    out.append("\nms per call: median over interleaved rounds of one call on the whole batch; fps = batch / ms. "
               "GFLOPs per call: 'paper' by the paper's counting rules (FSRCNN's transposed convolution charged "
               "16x its real work), 'real' as executed (pcsr.real_flops).")
    return "\n".join(out) + "\n"


def csv_rows(rows: list[dict], env: dict, args, device, now: str) -> list[dict]:
    out = []
    for r in rows:
        med, p20, p80 = r["stats"].ms
        out.append({
            "op": r["op"], "backend": r["backend"], "model": r["model"], "variant": r["variant"], "size": r["size"],
            "height": r["height"], "width": r["width"], "device": torch.device(device).type,
            "device_name": env["device_name"], "k": args.k, "adaptive": int(args.adaptive),
            "refine": int(not args.no_refine), "precision": r["precision"], "weights": r["weights"],
            "median_ms": f"{med:.3f}", "p20_ms": f"{p20:.3f}", "p80_ms": f"{p80:.3f}", "n": r["stats"].n,
            "gflops": f"{r['gflops']:.6g}", "gflop_per_s": f"{r['gflops'] / r['stats'].median:.2f}",
            "peak_mb": "", "heavy_fraction": _f(r["heavy"], "{:.4f}"), "time_ratio": f"{r['time_ratio']:.4f}",
            "flops_ratio": f"{r['flops_ratio']:.4f}", "batch": r["batch"], "mode": r["mode"],
            "fps": f"{r['batch'] / r['stats'].median:.3f}", "gflops_real": f"{r['gflops_real']:.6g}",
            "real_flops_ratio": f"{r['real_flops_ratio']:.4f}",
            "torch": env["torch"], "triton": env["triton"], "commit": env["commit"], "timestamp": now,
        })
    return out
