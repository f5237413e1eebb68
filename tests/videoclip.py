"""Tiny synthetic video clips for the tests (made on the fly: no media is committed).

    python tests/videoclip.py clip.mp4 --size 320x180 --seconds 2   # the clip of the README's timing

A clip is a moving pattern with detail at several scales (sine gratings drifting, a
scrolling checkerboard, a disc crossing the frame), so that a wrong frame, a frame out of
order or a colour-matrix mix-up shows in the numbers, with a 440 Hz stereo tone as audio.
"""
from __future__ import annotations

import argparse
from fractions import Fraction

import numpy as np


def pattern(i: int, w: int, h: int, fps: float) -> np.ndarray:
    """Frame ``i`` as ``[h, w, 3]`` uint8."""
    t = i / fps
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 110 * np.sin(xx / (w / 19) + 3 * t)
    g = 127 + 110 * np.sin(yy / (h / 16) - 2 * t + xx / (w / 8))
    b = 40 + 170 * ((((xx + 40 * t) // max(2, w // 20)) + yy // max(2, h // 11)) % 2)
    img = np.stack([r, g, b], -1)
    cx, cy, rad = w * (0.2 + 0.6 * ((t * 0.5) % 1)), h / 2, max(2, h / 6)
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < rad ** 2] = (240, 225, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_clip(path, size=(320, 180), frames=None, seconds=2.0, fps=25, codec="libx264", pix_fmt="yuv420p",
              audio="aac", sample_rate=48000, rotation=0, options=None, container=None, matrix=None,
              full_range=False, pts=None):
    """Write a clip; returns the frames written as ``[h, w, 3]`` uint8 (before encoding).
    ``matrix`` (1 = BT.709, 5 = BT.601) and ``full_range`` convert and tag the colours
    (untagged by default); ``pts`` gives each frame's timestamp in 1/fps units (a variable
    frame rate), else frame i is at i."""
    import av

    w, h = size
    rate = Fraction(fps).limit_denominator(1001)
    n = len(pts) if pts is not None else frames if frames is not None else round(seconds * rate)
    written = []
    with av.open(str(path), "w", format=container) as out:
        v = out.add_stream(codec, rate=rate, options=dict(options or {}))
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        if rotation:
            v.set_display_rotation(rotation)
        if matrix is not None:
            v.codec_context.colorspace = matrix
            v.codec_context.color_range = 2 if full_range else 1
        a = None
        if audio:
            a = out.add_stream(audio, rate=sample_rate)
            a.layout = "stereo"
        for i in range(n):
            img = pattern(i, w, h, float(rate))
            written.append(img)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if matrix is not None:
                f = f.reformat(format=pix_fmt, dst_colorspace=matrix, dst_color_range=2 if full_range else 1)
            f.pts = i if pts is None else pts[i]
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        if a is not None:
            total = round((n if pts is None else pts[-1] + 1) / rate * sample_rate)
            fmt = a.codec_context.format.name if a.codec_context.format else "fltp"
            for s in range(0, total, 1024):
                k = np.arange(s, min(total, s + 1024))
                x = 0.3 * np.sin(2 * np.pi * 440 * k / sample_rate)
                if fmt.startswith("s16"):
                    x = (x * 32767).astype(np.int16)
                else:
                    x = x.astype(np.float32)
                planar = fmt.endswith("p")
                arr = np.stack([x, x]) if planar else np.stack([x, x], -1).reshape(1, -1)
                af = av.AudioFrame.from_ndarray(arr, format=fmt, layout="stereo")
                af.sample_rate, af.pts = sample_rate, s
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode():
                out.mux(p)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--fps", type=float, default=25)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    n = len(make_clip(a.out, (w, h), seconds=a.seconds, fps=a.fps))
    print(f"{a.out}: {w}x{h}, {n} frames at {a.fps:g} fps, {a.seconds:g} s, AAC stereo audio")


if __name__ == "__main__":
    main()
