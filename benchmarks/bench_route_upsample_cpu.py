"""``torch.ops.pcsr.route_upsample`` on the CPU: the C++ kernels against the reference and
the authors' loop, beside the machine's sgemm rate.

    python benchmarks/bench_route_upsample_cpu.py                       # 2k (x4 from 640x400), FSRCNN + CARN
    python benchmarks/bench_route_upsample_cpu.py --sizes 1k,2k --repeat 5 --csv out.csv
    python benchmarks/bench_route_upsample_cpu.py --rss-8k              # + peak RSS at 8k (x4 from 1920x1080)

Providers (all on the same number of threads, ``--threads``, default torch's):
``reference`` (pcsr_kernels.reference, pure PyTorch), ``official-style`` (the authors'
inference loop re-stated, ``official_style.py``), ``cpu`` (the C++ kernels, csrc/cpu).

Inputs (``workloads.py``): the variant's model -- the authors' checkpoints where present
(``../shared/reference/official-pcsr``; their trained classifier decides how many pixels
are heavy), random weights of the same widths otherwise -- on a natural photograph resized
to the LR size; ``feat`` is the model's backbone output. k = 0 unless ``--k``/``--adaptive``.

Every provider's result is checked against the reference before it is timed (classes, and
values within 1e-3: ``workloads.agreement``); then ``--repeat`` rounds that time every
provider once in turn (so that load from other jobs falls on all alike): medians and
p20/p80 of the wall time, and the median process CPU time per call.

FLOPs (multiply-add = 2, biases not counted). ``paper`` counts what the reference and the
authors' loop execute: per HR pixel the whole classifier and its branch's whole MLP.
``executed`` counts what the C++ kernels must do: the first layers' LR terms once per LR
pixel (the classifier's for every LR pixel, a branch's for the LR pixels that have an HR
pixel of that class) and the other layers per HR pixel; the kernels' padding of widths to
whole vectors and tile granularity are not counted (a lower bound). GFLOP/s = the
provider's count / its median. ``sgemm`` is ``torch.mm`` of two 2048x2048 fp32 matrices on
the same threads (median of 5), measured before and after every block; the best of them
is the machine's rate; ``of sgemm`` = GFLOP/s / sgemm. On a machine that other
jobs share, wall times drift with their load; ``cpu ms`` (process CPU time of a call, all
threads) and ``(cpu)`` (the same ratio on FLOPs per CPU-second, for the provider and for
sgemm) are steadier.

Output: a table on stdout, and one row per (variant, size, provider) appended to ``--csv``
(default ``benchmarks/results/route_upsample_cpu.csv``): op, provider, device, size,
variant, median_ms, p20_ms, p80_ms, cpu_ms, gflops_per_s, sgemm_gflops_per_s, torch, ...
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import resource
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # siblings (workloads, timing, official_style) import by name
    sys.path.insert(0, str(_HERE))

import torch  # noqa: E402

import pcsr_kernels  # noqa: E402
import timing  # noqa: E402
import workloads  # noqa: E402
from official_style import official_route_upsample  # noqa: E402
from pcsr_kernels.geometry import nearest_axis  # noqa: E402

PROVIDERS = ("reference", "official-style", "cpu")
CSV_FIELDS = ["op", "provider", "device", "device_name", "threads", "size", "height", "width", "variant", "weights",
              "k", "adaptive", "refine", "median_ms", "p20_ms", "p80_ms", "cpu_ms", "heavy_fraction", "gflop",
              "gflops_per_s", "sgemm_gflops_per_s", "of_sgemm", "of_sgemm_cpu", "speedup_vs_official", "speedup_vs_reference", "torch", "commit",
              "timestamp"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="2k", help="outputs at x4: 1k,2k,4k,8k or WxH (default 2k = 2560x1600)")
    p.add_argument("--variants", default="fsrcnn,carn", help="fsrcnn,carn,srresnet (default fsrcnn,carn)")
    p.add_argument("--providers", default=",".join(PROVIDERS), help=f"subset of {','.join(PROVIDERS)}")
    p.add_argument("--threads", type=int, default=None, help="threads for every provider (default: torch's)")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per provider (default 3)")
    p.add_argument("--k", type=float, default=0.0)
    p.add_argument("--adaptive", action="store_true", help="ADM routing instead of cost-aware")
    p.add_argument("--no-refine", action="store_true")
    p.add_argument("--weights", default="auto", choices=("auto", "official", "random"))
    p.add_argument("--csv", default=str(_HERE / "results" / "route_upsample_cpu.csv"),
                   help="append one row per measurement to this CSV file ('' for none)")
    p.add_argument("--rss-8k", action="store_true",
                   help="also measure the cpu backend's peak RSS at 8k (x4 from 1920x1080)")
    return p.parse_args(argv)


# --- FLOPs ----------------------------------------------------------------------------------

def _mlp_flops(widths, first: bool = True) -> int:
    pairs = list(zip(widths[:-1], widths[1:]))
    return sum(2 * a * b for a, b in (pairs if first else pairs[1:]))


def _widths(params) -> list[int]:
    return [params[0].shape[1]] + [params[i].shape[0] for i in range(0, len(params), 2)]


def flop_counts(feat, out_size, classifier, upsamplers, depths, classes) -> dict:
    """{'paper': ..., 'executed': ...} FLOPs of one call (see the module docstring)."""
    B, D, h, w = feat.shape
    H, W = out_size
    cls_w = _widths(classifier)
    branches, at = [], 0
    for d in depths:
        branches.append(_widths(upsamplers[at:at + 2 * d]))
        at += 2 * d
    counts = torch.bincount(classes.flatten(), minlength=len(depths)).tolist()
    paper = B * H * W * _mlp_flops(cls_w) + sum(n * _mlp_flops(bw) for n, bw in zip(counts, branches))
    # LR pixels that some HR pixel of class j looks up.
    iy, _ = nearest_axis(H, h)
    ix, _ = nearest_axis(W, w)
    lr_index = (iy[:, None] * w + ix[None, :]).flatten()  # [H*W]
    executed = B * h * w * 2 * D * cls_w[1] + B * H * W * _mlp_flops(cls_w, first=False)
    for j, bw in enumerate(branches):
        hit = torch.zeros(B, h * w).index_add_(1, lr_index, (classes.view(B, -1) == j).float()) > 0
        executed += int(hit.sum()) * 2 * D * bw[1] + counts[j] * _mlp_flops(bw, first=False)
    return {"paper": paper, "executed": executed}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure_round_robin(fns: dict, repeat: int) -> dict:
    """{name: (wall Stats, median process CPU seconds per call)}: `repeat` rounds, each
    timing every fn once in turn, so that load from other jobs on a shared machine falls
    on all of them alike. The CPU time (all threads) tells how much of the machine a call
    got."""
    walls = {k: [] for k in fns}
    cpus = {k: [] for k in fns}
    for _ in range(max(1, repeat)):
        for k, fn in fns.items():
            c0, t0 = _cpu_seconds(), time.perf_counter()
            fn()
            walls[k].append(time.perf_counter() - t0)
            cpus[k].append(_cpu_seconds() - c0)
    out = {}
    for k in fns:
        w = walls[k]
        out[k] = (timing.Stats(statistics.median(w), timing._quantile(w, 0.2), timing._quantile(w, 0.8), len(w), w),
                  statistics.median(cpus[k]))
    return out


def sgemm_rate(n: int = 2048, repeat: int = 5) -> tuple[float, float]:
    """torch.mm on two n x n fp32 matrices on the current threads: (GFLOP/s of the median
    wall time, GFLOP per CPU-second)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    st, cpu = measure_round_robin({"mm": lambda: torch.mm(a, b)}, repeat)["mm"]
    return 2 * n ** 3 / st.median / 1e9, 2 * n ** 3 / cpu / 1e9


# --- providers -------------------------------------------------------------------------------

def provider_fn(name: str, args: dict, k: float, adaptive: bool, refine: bool):
    if name == "official-style":
        return lambda: official_route_upsample(**args, k=k, adaptive=adaptive, refine=refine)

    def run():
        with pcsr_kernels.use_backend(name):
            return pcsr_kernels.route_upsample(**args, k=k, adaptive=adaptive, refine=refine)
    return run


def problem(variant, H, W, weights: str):
    """(route_upsample kwargs, weight source) for a variant at output H x W (x4)."""
    model, wsrc = workloads.build_pcsr(variant, weights)
    lr, _ = workloads.make_lr(H // workloads.SCALE, W // workloads.SCALE)
    with torch.no_grad():
        x = model.normalise(lr)
        feat = model._inference_backbone()(x)
    return _detached(dict(feat=feat, lr=x, out_size=(H, W), **workloads.model_args(model, feat))), wsrc


def _detached(args: dict) -> dict:
    """route_upsample kwargs with the model's parameters detached (inference only)."""
    out = dict(args)
    for key in ("classifier", "upsamplers"):
        out[key] = [t.detach() for t in args[key]]
    out["cost"] = args["cost"].detach()
    return out


def rss_8k(variant, weights: str) -> None:
    """Peak resident memory of one cpu-backend call at 8k beyond its inputs and outputs."""
    H, W = workloads.SIZES["8k"]
    h, w = H // workloads.SCALE, W // workloads.SCALE
    model, wsrc = workloads.build_pcsr(variant, weights)
    D = model.backbone.out_dim
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(1, D, h, w, generator=g)  # the backbone's output at 1920x1080 (random: memory only)
    lr = torch.rand(1, 3, h, w, generator=g)
    args = _detached(dict(feat=feat, lr=lr, out_size=(H, W), **workloads.model_args(model, feat)))
    out_bytes = 1 * 3 * H * W * 4 + 1 * H * W * 8  # sr fp32 + classes int64
    in_bytes = feat.numel() * 4 + lr.numel() * 4
    for adaptive in (False, True):
        fn = provider_fn("cpu", args, 0.0, adaptive, True)
        t0 = datetime.datetime.now()
        peak = timing.peak_memory(fn)
        dt = (datetime.datetime.now() - t0).total_seconds()
        extra = peak - out_bytes
        print(f"8k RSS {variant.name} ({wsrc} weights) cpu {'ADM' if adaptive else 'k=0'}: peak growth "
              f"{peak / 2**20:.0f} MiB during the call, outputs {out_bytes / 2**20:.0f} MiB -> "
              f"{extra / 2**20:.0f} MiB beyond input ({in_bytes / 2**20:.0f} MiB) and output "
              f"(target < 1536 MiB: {'ok' if extra < 1.5 * 2**30 else 'OVER'}); call took {dt:.1f} s")


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    providers = [p.strip() for p in a.providers.split(",") if p.strip()]
    for p in providers:
        if p not in PROVIDERS:
            raise SystemExit(f"unknown provider {p!r}; choose from {', '.join(PROVIDERS)}")
    if "cpu" in providers:
        ok, why = pcsr_kernels.backend.availability("cpu", "cpu")
        if not ok:
            print(f"skipping provider cpu: {why}")
            providers.remove("cpu")
    refine = not a.no_refine
    env = timing.environment("cpu")
    print(f"# {env['device_name']}, torch {env['torch']}, commit {env['commit']}, {threads} threads for every provider")
    rates = [sgemm_rate()]
    print(f"# sgemm (torch.mm 2048^2 fp32, {threads} threads): {rates[0][0]:.1f} GFLOP/s wall, "
          f"{rates[0][1]:.1f} GFLOP per CPU-second; load average {os.getloadavg()[0]:.2f}")
    blocks = []  # (title, variant, label, H, W, wsrc, heavy, flops, stats)
    for vname in a.variants.split(","):
        variant = workloads.parse_variant(vname)
        for size in a.sizes.split(","):
            label, H, W = workloads.parse_size(size)
            args, wsrc = problem(variant, H, W, a.weights)
            want = provider_fn("reference", args, a.k, a.adaptive, refine)()
            heavy = float((want[1] < (len(args["depths"]) + 1) // 2).double().mean())
            fl = flop_counts(args["feat"], (H, W), args["classifier"], args["upsamplers"], args["depths"], want[1])
            title = (f"## {variant.name}, {label} ({W}x{H} from {W // 4}x{H // 4}), {wsrc} weights, "
                     f"heavy fraction {heavy:.3f}, k={a.k}{', ADM' if a.adaptive else ''}, refine={refine}; "
                     f"paper {fl['paper'] / 1e9:.2f} GFLOP, executed by cpu {fl['executed'] / 1e9:.2f} GFLOP")
            print(title, flush=True)
            fns = {}
            for p in providers:
                fn = provider_fn(p, args, a.k, a.adaptive, refine)
                got = fn()  # also the warm-up
                ok, msg = workloads.agreement(got[0], got[1], *want)
                print(f"   {p}: {'agrees with' if ok else 'DISAGREES with'} the reference ({msg})"
                      f"{'' if ok else ': not timed'}", flush=True)
                if ok:
                    fns[p] = fn
            del want, got
            load = os.getloadavg()[0]
            stats = measure_round_robin(fns, a.repeat)
            rates.append(sgemm_rate())
            blocks.append((title, variant, label, H, W, wsrc, heavy, fl, stats, load))

    # The machine's rate: the best of the sgemm measurements (each taken between blocks).
    rate = max(r[0] for r in rates)
    rate_cpu = max(r[1] for r in rates)
    print(f"\n# sgemm measured {len(rates)} times: {', '.join(f'{r[0]:.1f}' for r in rates)} GFLOP/s wall -> "
          f"{rate:.1f}; per CPU-second best {rate_cpu:.1f}")
    hdr = (f"{'variant':12s} {'size':6s} {'provider':15s} {'median ms':>10s} {'p20':>9s} {'p80':>9s} {'cpu ms':>9s} "
           f"{'GFLOP':>7s} {'GFLOP/s':>8s} {'of sgemm':>8s} {'(cpu)':>6s} {'vs official':>11s} {'vs ref':>7s}")
    rows = []
    for title, variant, label, H, W, wsrc, heavy, fl, stats, load in blocks:
        print(f"\n{title}\n(load average {load:.2f} when timed)")
        print(hdr)
        for p, (st, cpu) in stats.items():
            gflop = fl["executed"] if p == "cpu" else fl["paper"]
            gfs = gflop / st.median / 1e9
            of_cpu = gflop / cpu / 1e9 / rate_cpu  # the same ratio on CPU-seconds
            vs_off = stats["official-style"][0].median / st.median if "official-style" in stats else float("nan")
            vs_ref = stats["reference"][0].median / st.median if "reference" in stats else float("nan")
            med, p20, p80 = st.ms
            print(f"{variant.name:12s} {label:6s} {p:15s} {med:10.1f} {p20:9.1f} {p80:9.1f} {1e3 * cpu:9.1f} "
                  f"{gflop / 1e9:7.2f} {gfs:8.1f} {gfs / rate:8.2f} {of_cpu:6.2f} {vs_off:11.2f} {vs_ref:7.2f}")
            rows.append(dict(op="route_upsample", provider=p, device="cpu", device_name=env["device_name"],
                             threads=threads, size=label, height=H, width=W, variant=variant.name, weights=wsrc,
                             k=a.k, adaptive=a.adaptive, refine=refine, median_ms=f"{med:.2f}",
                             p20_ms=f"{p20:.2f}", p80_ms=f"{p80:.2f}", cpu_ms=f"{1e3 * cpu:.2f}",
                             heavy_fraction=f"{heavy:.4f}", gflop=f"{gflop / 1e9:.3f}", gflops_per_s=f"{gfs:.2f}",
                             sgemm_gflops_per_s=f"{rate:.2f}", of_sgemm=f"{gfs / rate:.3f}",
                             of_sgemm_cpu=f"{of_cpu:.3f}", speedup_vs_official=f"{vs_off:.2f}",
                             speedup_vs_reference=f"{vs_ref:.2f}", torch=env["torch"], commit=env["commit"],
                             timestamp=datetime.datetime.now().isoformat(timespec="seconds")))
    if a.csv and rows:
        path = Path(a.csv)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with open(path, "a", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            if new:
                wr.writeheader()
            wr.writerows(rows)
        print(f"\n{len(rows)} rows appended to {path}")
    if a.rss_8k:
        print()
        for vname in a.variants.split(","):
            rss_8k(workloads.parse_variant(vname), a.weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
