"""``pcsr upscale`` on a video: decode, upscale batches of frames on the device, encode.

The frames go through three threads so that the device does not wait for FFmpeg nor
FFmpeg for the device (FFmpeg decodes, converts and encodes without holding the GIL, and
so does torch): a reader decodes frames into batches, the calling thread runs the model on
each batch (:func:`upscale_frames`, the one place a video meets the model), a writer
encodes and muxes. The queues between them hold two items, so memory stays bounded however
long the video. Audio packets travel through the same queues as the frames, so the writer
sees them in file order.

Files are handled as images are (:mod:`pcsr.upscale`): targets planned and checked before
the model is loaded, the encoder and muxer opened once in memory to prove they accept the
output (:func:`check_job`), written through temporary files renamed at the end (a failure
or Ctrl-C leaves nothing behind), the class map committed before the video.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import heapq
import queue
import sys
import threading
import time

from .videoio import READ_SUFFIXES, VideoError, is_video  # noqa: F401  (re-exported for the planner)

# Output pixels per batch by default: a 4K frame's float output, classes and the
# kernels' buffers take about 0.6 GB, so a GPU takes four of them; on a CPU batching gains
# little beyond a few frames and memory is shared with the encoder.
BATCH_PIXELS = {"cpu": 1 << 22, "cuda": 1 << 25}
MAX_BATCH = 8
_QUEUE = 2
_POLL = 0.1  # seconds a blocked thread waits before it looks whether the run was stopped
_REORDER = 16  # frames a timestamp may be out of place (H.264 and HEVC reorder at most 16)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The video options of ``pcsr upscale``."""
    g = parser.add_argument_group("video inputs (.mp4, .mkv, .mov, .webm, .avi, ...; needs PyAV: pip install av)")
    g.add_argument("--batch", type=int, default=None, metavar="N",
                   help="frames per model call (default: as many as give 4 Mpx of output on a CPU, 32 Mpx on a "
                        f"GPU, at most {MAX_BATCH})")
    g.add_argument("--codec", default=None, metavar="NAME",
                   help="video encoder: h264 (default; vp9 for .webm), hevc, vp9, av1, ffv1 (lossless), prores, "
                        "or any FFmpeg encoder name of PyAV's build, e.g. h264_nvenc")
    q = g.add_mutually_exclusive_group()
    q.add_argument("--crf", type=int, default=None, metavar="Q",
                   help="constant quality, lower is better: h264/hevc 0-51 (default 18 / 20), vp9 0-63 (30), "
                        "av1 1-63 (30)")
    q.add_argument("--bitrate", default=None, metavar="RATE", help="target bit rate instead of --crf, e.g. 20M")
    g.add_argument("--preset", default=None,
                   help="encoder speed: h264/hevc ultrafast..veryslow (default medium), av1 0-13, nvenc p1-p7")
    g.add_argument("--pix-fmt", default=None, metavar="FMT",
                   help="pixel format written (default: the input's when the encoder takes it, else yuv420p; "
                        "RGB for lossless codecs)")
    g.add_argument("--no-audio", action="store_true", help="leave the audio out (default: copied)")


_VIDEO_ONLY = (("batch", "--batch"), ("codec", "--codec"), ("crf", "--crf"), ("bitrate", "--bitrate"),
               ("preset", "--preset"), ("pix_fmt", "--pix-fmt"), ("no_audio", "--no-audio"))


def check_args(args, jobs) -> None:
    """The video options against the plan: they need a video among the inputs, and must suit
    every container written. Raises :class:`pcsr.cli.UsageError` (exit 2)."""
    from .cli import UsageError
    from .videoio import check_output_suffix, encoding_from_args, require_av

    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    videos = [j for j in jobs if is_video(j.src)]
    if not videos:
        given = [flag for name, flag in _VIDEO_ONLY if getattr(args, name, None) not in (None, False)]
        if given:
            raise UsageError(f"{', '.join(given)}: video options, and no input is a video")
        return
    try:
        require_av()
    except VideoError:
        return  # each video then fails on its own, with the message; images still run
    containers = {check_output_suffix(t) for j in videos for t in (j.dst, j.classes) if t is not None}
    for c in sorted(containers):
        try:
            encoding_from_args(args, c)
        except VideoError as e:
            raise UsageError(str(e)) from None


def _output_size(info, scale: float) -> tuple[int, int]:
    from .model import output_size

    H, W = output_size(info.height, info.width, scale, None)
    return W, H


def check_job(job, args) -> None:
    """Everything about one video that can be known before the model is loaded: the file
    opens and has a decodable video stream, the output size, and the encoder and muxer
    accept what will be written (opened in memory). Raises :class:`VideoError`."""
    from .videoio import VideoReader

    with VideoReader(job.src) as r:
        _plan(job, args, r.info)


def _plan(job, args, info):
    """``(W, H)`` and, per target (video, class map), ``(container, encoding, pix_fmt, audio plans)``."""
    from .videoio import check_output_suffix, encoding_from_args, plan_output

    W, H = _output_size(info, args.scale)
    if round(min(info.width, info.height) * args.scale) < 1:
        raise VideoError(f"{job.src} ({info.width}x{info.height}) at --scale {args.scale:g} would be {W}x{H} "
                         "pixels; the output must be at least 1 pixel per side")
    outputs = []
    for target, audio in ((job.dst, True), (job.classes, False)):
        if target is None:
            continue
        container = check_output_suffix(target)
        enc = encoding_from_args(args, container)
        try:
            pix_fmt, plans = plan_output(info, (W, H), enc, container, enc.audio and audio)
        except VideoError as e:
            raise VideoError(f"{job.src} -> {target}: {e}") from None
        outputs.append((container, enc, pix_fmt, plans))
    return (W, H), outputs


def default_batch(device, W: int, H: int) -> int:
    budget = BATCH_PIXELS.get(device.type, BATCH_PIXELS["cpu"])
    return max(1, min(MAX_BATCH, budget // (W * H)))


def upscale_frames(model, lr, args):
    """One batch of frames through the model: ``lr [B, 3, h, w]`` float in [0, 1] on the
    model's device -> ``(sr [B, 3, H, W], classes [B, H, W])``, as ``pcsr upscale`` runs an
    image (:func:`pcsr.upscale._infer`). A path specialised to a fixed frame size (a
    captured graph, a compiled model) belongs here."""
    from .upscale import _infer

    return _infer(model, lr, args)


# --- the three threads ------------------------------------------------------------------------

class _Stopped(Exception):
    """The run was stopped (an error elsewhere, Ctrl-C): leave quietly."""


class _Pipe:
    def __init__(self):
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def fail(self, e: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = e
        self.stop.set()

    def put(self, q: queue.Queue, item) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                pass
        raise _Stopped

    def get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                pass
        raise _Stopped


_END = ("end",)


def _read(pipe: _Pipe, reader, batch: int, audio: bool, q: queue.Queue) -> None:
    """Decode: ("video", arrays, times, rotation) per batch, ("audio", packet) as they come."""
    av = sys.modules["av"]
    info, src = reader.info, reader.path
    tb = info.time_base
    step = max(1, round(1 / (info.rate * tb))) if info.rate else 1
    # Frames leave the decoder in display order, but some containers (AVI with B-frames)
    # give them their timestamps in decoding order: each frame takes the smallest
    # timestamp among the next few, which changes nothing where they already increase.
    pending: collections.deque = collections.deque()
    stamps: list[int] = []
    arrays, times = [], []
    last, count, rotation = None, 0, None

    def release() -> None:
        nonlocal last, arrays, times
        arr, dur = pending.popleft()
        pts = heapq.heappop(stamps) if stamps else None
        # a frame without a timestamp, or a repeated one, follows the last frame: encoders
        # refuse timestamps that do not increase
        if pts is None or (last is not None and pts <= last):
            pts = 0 if last is None else last + step
        last = pts
        arrays.append(arr)
        times.append((pts, dur))
        if len(arrays) == batch:
            pipe.put(q, ("video", arrays, times, rotation))
            arrays, times = [], []

    try:
        for packet in reader.packets(audio):
            if packet.stream.index != reader.stream.index:
                pipe.put(q, ("audio", packet))
                continue
            for frame in packet.decode():
                if (frame.width, frame.height) != (info.width, info.height):
                    raise VideoError(f"{src}: frame {count} is {frame.width}x{frame.height} and the video began "
                                     f"at {info.width}x{info.height}; size changes within a video are not supported")
                if rotation is None:
                    rotation = int(round(frame.rotation or 0))
                if frame.pts is not None:
                    heapq.heappush(stamps, frame.pts)
                pending.append((reader.to_array(frame), frame.duration or 0))
                count += 1
                if len(pending) > _REORDER:
                    release()
        while pending:
            release()
        if arrays:
            pipe.put(q, ("video", arrays, times, rotation))
        pipe.put(q, _END)
    except _Stopped:
        pass
    except av.FFmpegError as e:
        pipe.fail(VideoError(f"{src}: decoding failed after {count} frames ({e})"))
    except BaseException as e:  # noqa: BLE001  (handed to the calling thread, which raises it)
        pipe.fail(e)


def _write(pipe: _Pipe, open_writers, q: queue.Queue, done: list) -> None:
    """Encode and mux until the end marker; ``done`` gets the writers, finished, on success."""
    writers = None
    held = []  # audio packets that come before the first frame (the output opens on it)
    try:
        while True:
            item = pipe.get(q)
            if item is _END:
                break
            if item[0] == "audio":
                if writers is None:
                    held.append(item[1])
                else:
                    writers[0].write_audio(item[1])
                continue
            _, outputs, times, rotation = item
            if writers is None:
                writers = open_writers(rotation)
                for packet in held:
                    writers[0].write_audio(packet)
                held = []
            for w, frames in zip(writers, outputs):
                w.write(frames, times)
        if writers is not None:
            for w in writers:
                w.close()
            done.extend(writers)
            writers = None
    except _Stopped:
        pass
    except BaseException as e:  # noqa: BLE001
        pipe.fail(e)
    finally:
        for w in writers or []:
            w.abort()


def _to_tensor(arrays, device):
    import numpy as np
    import torch

    x = np.stack(arrays)  # [B, h, w, 3]
    top = 255.0 if x.dtype == np.uint8 else 65535.0
    if x.dtype != np.uint8:
        x = x.astype(np.int32)  # torch's uint16 has few kernels
    # the same values and layout as the image reader gives: a channels-last input would
    # send the convolutions down other kernels, whose sums round differently
    return torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float().div_(top).contiguous()


def _to_array(x, bits: int):
    import torch

    top = 255.0 if bits == 8 else 65535.0
    q = x.detach().float().clamp(0, 1).mul_(top).round_()
    q = q.to(torch.uint8) if bits == 8 else q.to(torch.int32)
    arr = q.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # [B, H, W, 3]
    return arr if bits == 8 else arr.astype("uint16")


def run_video(model, job, args, device, bars: bool):
    """Upscale one video (the job's checks passed): returns a :class:`pcsr.upscale.Result`."""
    from tqdm import tqdm

    from .atomic import atomic_path
    from .upscale import Result
    from .videoio import VideoReader, VideoWriter, bits, require_av

    av = require_av()

    t0 = time.perf_counter()
    reader = VideoReader(job.src)
    try:
        info = reader.info
        (W, H), outputs = _plan(job, args, info)
        container, enc, _, audio = outputs[0]
        notes = [n for n in (a.note() for a in audio) if n]
        notes += [f"{s} left out" for s in info.others]
        if info.alpha:
            notes.append(f"the alpha channel of {info.pix_fmt} left out (the frames are upscaled as RGB)")
        for n in notes:
            tqdm.write(f"pcsr upscale: {job.src}: {n}", file=sys.stderr)
        batch = args.batch or default_batch(device, W, H)
        depth = [8 if bits(p) <= 8 else 16 for _, _, p, _ in outputs]
        metadata = {k: v for k, v in reader.container.metadata.items()
                    if k not in ("major_brand", "minor_version", "compatible_brands", "encoder")}

        with contextlib.ExitStack() as stack:
            # entered video first, so the class map (exited first) is committed first
            tmp = stack.enter_context(atomic_path(job.dst, overwrite=args.overwrite))
            cls_tmp = stack.enter_context(atomic_path(job.classes, overwrite=args.overwrite)) \
                if job.classes is not None else None

            def open_writers(rotation: int):
                ws = [VideoWriter(tmp, container, (W, H), info, enc, audio, rotation, metadata)]
                if cls_tmp is not None:
                    ws.append(VideoWriter(cls_tmp, outputs[1][0], (W, H), info, outputs[1][1], [], rotation))
                return ws

            bar = tqdm(total=info.frames, unit="frame", desc=job.src.name, leave=False, file=sys.stderr,
                       disable=not bars)
            try:
                frames, heavy = _pipeline(model, reader, open_writers, args, device, batch, bool(audio), depth,
                                          job.classes is not None, bar)
            except av.FFmpegError as e:  # from the encoders or the muxer: name the target, not the temporary file
                msg = str(e).replace(tmp, str(job.dst))
                if cls_tmp is not None:
                    msg = msg.replace(cls_tmp, str(job.classes))
                raise VideoError(f"encoding or writing the output failed: {msg}") from None
            finally:
                bar.close()
            if frames == 0:
                raise VideoError(f"{job.src}: no frame could be decoded")
    finally:
        reader.close()
    return Result(str(job.src), str(job.dst), "written", time.perf_counter() - t0, heavy / frames, (W, H),
                  frames=frames)


def _pipeline(model, reader, open_writers, args, device, batch, audio, depth, with_classes, bar):
    """Run the reader and writer threads around the model; returns (frames, summed heavy fraction)."""
    from .imageio import classes_picture

    pipe = _Pipe()
    q_in: queue.Queue = queue.Queue(_QUEUE)
    q_out: queue.Queue = queue.Queue(_QUEUE)
    done: list = []
    threads = [threading.Thread(target=_read, args=(pipe, reader, batch, audio, q_in), daemon=True,
                                name="pcsr-video-read"),
               threading.Thread(target=_write, args=(pipe, open_writers, q_out, done), daemon=True,
                                name="pcsr-video-write")]
    for t in threads:
        t.start()
    frames, heavy = 0, 0.0
    try:
        while True:
            item = pipe.get(q_in)
            if item is _END:
                pipe.put(q_out, _END)
                break
            if item[0] == "audio":
                pipe.put(q_out, item)
                continue
            _, arrays, times, rotation = item
            lr = _to_tensor(arrays, device)
            sr, classes = upscale_frames(model, lr, args)
            outputs = [_to_array(sr, depth[0])]
            if with_classes:
                outputs.append(_to_array(classes_picture(classes, model.num_branches, sr), depth[1]))
            heavy += float((classes < model.num_heavy).float().mean(dim=(1, 2)).sum())
            frames += len(arrays)
            del lr, sr, classes
            pipe.put(q_out, ("video", outputs, times, rotation))
            bar.update(len(arrays))
        threads[1].join()  # the writer finishes the files
    except _Stopped:
        pass
    except BaseException as e:
        pipe.fail(e)
    finally:
        pipe.stop.set()
        for t in threads:
            # the writer must be gone before the temporary files are removed: closing an
            # MP4 rewrites it by name
            t.join()
    if pipe.error is not None:
        raise pipe.error
    if not done and frames:
        raise VideoError("the video writer stopped without finishing the file")
    return frames, heavy
