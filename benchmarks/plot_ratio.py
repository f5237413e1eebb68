"""Do the FLOPs PCSR saves become time saved? One point per (variant, size, backend) of a
``compare.py`` CSV: x = PCSR's FLOPs / the original's, y = PCSR's end-to-end time / the
original's, both from the same run. On the diagonal, the FLOP savings became time savings
one for one; above it, time was lost on the way (routing, gathers, launches); above the
line y = 1, PCSR is slower than the network it is meant to speed up.

    python benchmarks/plot_ratio.py bench.csv [more.csv ...] -o benchmarks/plots/ratio_cpu.png
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

LABELS = {"cpu": "cpu backend (C++)", "triton": "triton backend", "cuda": "cuda backend (CUDA C++)",
          "reference": "pure PyTorch (reference)", "official": "authors' loop (official_style)"}
COLORS = {"cpu": "tab:blue", "triton": "tab:purple", "cuda": "tab:green", "reference": "tab:orange",
          "official": "tab:red"}
MARKERS = {"fsrcnn": "o", "carn": "s", "srresnet": "^"}
VARIANT_NAMES = {"fsrcnn": "FSRCNN-PCSR", "carn": "CARN-PCSR", "srresnet": "SRResNet-PCSR"}


def read_points(paths: list[str], device: str | None = None) -> list[dict]:
    """The e2e rows of PCSR paths that carry both ratios. A later file (or a later row of
    the same configuration) replaces an earlier one, so appended re-runs show their
    latest figures."""
    latest: dict[tuple, dict] = {}
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if r.get("op") != "e2e" or r.get("backend") == "torch":
                    continue
                if not r.get("time_ratio") or not r.get("flops_ratio"):
                    continue
                if device and r.get("device") != device:
                    continue
                key = (r["variant"], r["size"], r["backend"], r["device_name"], r["k"], r["adaptive"], r["refine"])
                latest[key] = r
    return list(latest.values())


def plot(points: list[dict], out: Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7.5, 6), dpi=110)
    xs = [float(p["flops_ratio"]) for p in points]
    ys = [float(p["time_ratio"]) for p in points]
    # A slow path can be 10x the original: then both axes go logarithmic (the diagonal
    # stays a straight line) so that the points near 1 remain readable.
    log = max(ys) > 4
    lo = min([0.2, *xs, *ys]) / 1.3 if log else 0.0
    top = max([1.1, *xs, *ys]) * (1.3 if log else 1.08)
    ax.plot([lo or 0, top], [lo or 0, top], color="black", linewidth=1, label="time ratio = FLOP ratio")
    ax.axhline(1.0, color="gray", linestyle=":", linewidth=1, label="as slow as the original")
    for p, x, y in zip(points, xs, ys):
        ax.scatter([x], [y], color=COLORS.get(p["backend"], "tab:gray"), marker=MARKERS.get(p["variant"], "x"),
                   s=55, zorder=3)
        ax.annotate(p["size"], (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
    handles = [Line2D([], [], color="black", linewidth=1, label="time ratio = FLOP ratio"),
               Line2D([], [], color="gray", linestyle=":", label="as slow as the original")]
    for b in dict.fromkeys(p["backend"] for p in points):
        handles.append(Line2D([], [], color=COLORS.get(b, "tab:gray"), marker="o", linestyle="none",
                              label=LABELS.get(b, b)))
    for v in dict.fromkeys(p["variant"] for p in points):
        handles.append(Line2D([], [], color="black", marker=MARKERS.get(v, "x"), linestyle="none",
                              markerfacecolor="none", label=VARIANT_NAMES.get(v, v)))
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    if log:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        fmt = FuncFormatter(lambda v, _: f"{v:g}")
        some = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "235" else "")  # 0.2, 0.3, 0.5, 2, ...
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(fmt)
            axis.set_minor_formatter(some)
        ax.set_xlim(lo, max(1.1, max(xs) * 1.3))
        ax.set_ylim(lo, top)
    else:
        ax.set_xlim(0, max(1.05, max(xs, default=1) * 1.1))
        ax.set_ylim(0, top)
    scale = " (log scale)" if log else ""
    ax.set_xlabel(f"FLOP ratio, PCSR / original (paper's counting rules){scale}")
    ax.set_ylabel(f"wall-time ratio, PCSR / original (end to end, median){scale}")
    devices = sorted({p["device_name"] for p in points})
    ax.set_title(title or ("Do FLOPs saved become time saved?\n" + "; ".join(devices)), fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("csv", nargs="+", help="CSV files written by compare.py --csv")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("--device", choices=["cpu", "cuda"], help="only rows of this device type")
    p.add_argument("--title", help="plot title (default: the question and the devices)")
    args = p.parse_args(argv)
    points = read_points(args.csv, args.device)
    if not points:
        print("plot_ratio: no end-to-end PCSR rows with both ratios in " + ", ".join(args.csv)
              + " (run compare.py with the original provider)", file=sys.stderr)
        return 1
    plot(points, Path(args.output), args.title)
    print(f"wrote {args.output} ({len(points)} points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
