"""Where the time of ``pcsr upscale clip.mp4`` goes: decoding, the model, encoding, and the
whole command (whose reader and writer threads overlap the three).

    python benchmarks/bench_video.py                       # 2 s of 320x180 at 25 fps, x4, fsrcnn
    python benchmarks/bench_video.py --size 960x540 --seconds 1 --model carn --device cuda

The clip is the tests' synthetic one (tests/videoclip.py: drifting gratings, a scrolling
checkerboard, a moving disc, AAC audio). Each stage is timed once over all frames, after
one warm-up batch; the end-to-end row runs the console command in a fresh process, so it
includes start-up (imports, model load) and is the wall time a user sees.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="320x180", help="input WxH (default 320x180)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--fps", type=float, default=25)
    ap.add_argument("--model", default="fsrcnn")
    ap.add_argument("--scale", type=float, default=4)
    ap.add_argument("--batch", type=int, default=None, help="frames per model call (default: pcsr upscale's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--codec", default="h264")
    a = ap.parse_args()

    import torch

    import pcsr
    from pcsr import video
    from pcsr.videoio import VideoInfo, VideoReader, VideoWriter, encoding_from_args, plan_output
    from videoclip import make_clip

    w, h = (int(v) for v in a.size.split("x"))
    device = torch.device(a.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.mp4"
        make_clip(src, (w, h), seconds=a.seconds, fps=a.fps)

        t = time.perf_counter()
        with VideoReader(src) as r:
            info: VideoInfo = r.info
            frames = [r.to_array(f) for f in r.frames()]
        rows.append(("decode + to RGB", time.perf_counter() - t))
        n = len(frames)
        W, H = round(w * a.scale), round(h * a.scale)
        batch = a.batch or video.default_batch(device, W, H)

        model = pcsr.load(a.model, device)
        from pcsr.cli import build_parser

        # the command's own defaults for every option the model call reads
        args = build_parser().parse_args(["upscale", str(src), "-o", "unused.mp4", "--scale", str(a.scale),
                                          "--codec", a.codec, "--no-audio"])
        video.upscale_frames(model, video._to_tensor(frames[:batch], device), args)  # warm-up
        outs = []
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t = time.perf_counter()
        for i in range(0, n, batch):
            sr, _ = video.upscale_frames(model, video._to_tensor(frames[i:i + batch], device), args)
            outs.append(video._to_array(sr, 8))
        sync()
        rows.append((f"model ({a.model}, batch {batch}, to and from the device)", time.perf_counter() - t))

        enc = encoding_from_args(args, "mp4")
        pix_fmt, _ = plan_output(info, (W, H), enc, "mp4", False)
        t = time.perf_counter()
        wr = VideoWriter(str(Path(tmp) / "enc.mp4"), "mp4", (W, H), info, enc, [])
        for k, arr in enumerate(o for batch_out in outs for o in batch_out):
            wr.write([arr], [(k * round(1 / (info.rate * info.time_base)), 0)])
        wr.close()
        rows.append((f"encode ({enc.encoder} {pix_fmt}, CRF default)", time.perf_counter() - t))

        cmd = [sys.executable, "-m", "pcsr", "upscale", str(src), "-o", str(Path(tmp) / "out.mp4"),
               "--model", a.model, "--scale", str(a.scale), "--device", a.device, "--codec", a.codec]
        if a.batch:
            cmd += ["--batch", str(a.batch)]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        rows.append(("pcsr upscale, end to end (new process)", time.perf_counter() - t))

    print(f"{n} frames {w}x{h} -> {W}x{H}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{a.device}")
    width = max(len(r[0]) for r in rows)
    print(f"{'stage'.ljust(width)}  seconds  frames/s")
    for name, s in rows:
        print(f"{name.ljust(width)}  {s:7.2f}  {n / s:8.2f}")


if __name__ == "__main__":
    main()
