"""Frames through a compiled model with the uploads and downloads overlapped
(:func:`pcsr.frames.stream_batches`) against the same calls made one after another.

    python benchmarks/pipeline_overlap.py --variant carn --size 4k --batch 4 --frames 64 --precision bf16

Host frames are uint8 ``[B, h, w, 3]`` (what a video decoder gives); the device turns them
into the model's input and the SR output back into uint8 ``[B, H, W, 3]`` before the
download (4x fewer bytes than float32). Three timings over the same frames, after one
untimed pass each:

* ``serial``: upload (``.cuda()`` from pageable memory), compute, download (``.cpu()``),
  batch after batch: what a plain loop does;
* ``pipeline``: ``stream_batches`` (pinned staging, a copy stream, events);
* ``compute``: the compiled call alone on a batch already on the device (the ceiling).

The outputs of ``serial`` and ``pipeline`` are compared (they must be equal) before the
times are printed. CUDA only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import torch  # noqa: E402

from pcsr.frames import stream_batches  # noqa: E402

import workloads as wl  # noqa: E402


def to_input(u8: torch.Tensor) -> torch.Tensor:
    return u8.permute(0, 3, 1, 2).float().div_(255)  # [B, 3, h, w]


def to_u8(sr: torch.Tensor) -> torch.Tensor:
    return sr.clamp(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # [B, H, W, 3]


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--variant", default="carn")
    p.add_argument("--size", default="4k")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=64, help="frames per timing (rounded up to whole batches)")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--weights", default="auto", choices=["auto", "official", "random"])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("pipeline_overlap: needs a CUDA device")
    dev = torch.device("cuda")
    v = wl.parse_variant(args.variant)
    label, H, W = wl.parse_size(args.size)
    h, w = H // wl.SCALE, W // wl.SCALE
    model, src = wl.build_pcsr(v, args.weights, dev)
    lr, _ = wl.make_lr(h, w, "cpu")
    B = args.batch
    n = -(-args.frames // B)
    base = (lr[0].permute(1, 2, 0) * 255).round().to(torch.uint8)  # [h, w, 3]
    g = torch.Generator().manual_seed(0)
    batches = [torch.stack([base.roll(int(torch.randint(0, 64, (1,), generator=g)), 1) for _ in range(B)])
               for _ in range(n)]  # [B, h, w, 3] each, frames differ a little
    run = model.compile_for((B, 3, h, w), out_size=(H, W), precision=args.precision)
    fn = lambda x: to_u8(run(x, copy=False)[0])  # noqa: E731

    def serial():
        return [fn(to_input(b.to(dev))).cpu() for b in batches]

    def pipeline():
        return list(stream_batches(fn, batches, dev, prepare=to_input))

    x_dev = to_input(batches[0].to(dev))

    def compute():
        for _ in range(n):
            fn(x_dev)
        torch.cuda.synchronize()

    out_s, out_p = serial(), pipeline()
    same = all(torch.equal(a, b) for a, b in zip(out_s, out_p))
    print(f"{v.name} {W}x{H} from {w}x{h}, weights {src}, precision {args.precision}, batch {B}, "
          f"{n * B} frames; serial and pipeline outputs equal: {same}", flush=True)
    if not same:
        print("FAILED: the pipeline's frames differ from the serial loop's; not timed")
        return 1
    compute()
    times = {}
    for name, f in (("serial", serial), ("pipeline", pipeline), ("compute", compute)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        f()
        torch.cuda.synchronize()
        times[name] = time.perf_counter() - t0
    print("| mode | seconds | fps |\n|---|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {n * B / t:.1f} |")
    print(f"pipeline / compute time: {times['pipeline'] / times['compute']:.3f}; "
          f"serial / compute: {times['serial'] / times['compute']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
