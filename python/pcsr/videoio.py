"""Video files in and out, through PyAV (the ``av`` package, whose wheels carry FFmpeg).

PyAV is imported only when a video is touched, so the package and ``pcsr upscale`` on
images work without it; a video without it is a :class:`VideoError` that says how to get it.

Reading (:class:`VideoReader`): the first video stream that is not cover art, decoded to
RGB with the matrix and range the stream declares. An untagged stream is read as players
guess (BT.709 from 1280x720 up, BT.601 below) and the output is tagged with that choice,
because a player would guess BT.709 for the upscaled size whatever the input was. More
than 8 bits per sample are kept (decoded as 16-bit RGB).

Writing (:class:`VideoWriter`): timestamps and time base of the input kept (so the frame
rate is, variable rates included), colour tags, sample aspect ratio and display rotation
copied; every audio stream copied packet for packet when the container can hold its codec,
else re-encoded (AAC, Opus for WebM) and said so. Other streams (subtitles, data) are left
out and said so. The caller writes to a temporary path (:func:`pcsr.atomic.atomic_path`),
so the container comes from the target's extension, never from the path written.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

# extensions read as video (folders are scanned for these too)
READ_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                 ".wmv", ".flv", ".3gp", ".ogv"}
# extension -> FFmpeg muxer of what can be written
WRITE_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
# a video written into a folder keeps its extension when it is writable, else goes into
# Matroska, which can hold (and so copy) any audio codec
FALLBACK_SUFFIX = ".mkv"

# what users type -> FFmpeg encoder (any other encoder name PyAV knows is taken as is)
CODEC_ALIASES = {"h264": "libx264", "avc": "libx264", "x264": "libx264", "hevc": "libx265", "h265": "libx265",
                 "x265": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "svtav1": "libsvtav1",
                 "prores": "prores_ks"}
CODEC_CHOICES = "h264 (libx264), hevc (libx265), vp9 (libvpx-vp9), av1 (libsvtav1), ffv1 (lossless), prores, " \
                "utvideo (lossless), mpeg4, h264_nvenc / hevc_nvenc (NVIDIA GPUs)"


@dataclass(frozen=True)
class Quality:
    """An encoder's constant-quality knob: ``option`` in [lo, hi], lower is better."""

    option: str
    lo: int
    hi: int
    default: int
    extra: tuple = ()  # options that put the encoder in constant-quality mode


# Defaults favour quality: an upscaled video is usually an end product. CRF 18 is x264's
# "visually lossless" point; x265 and SVT-AV1 reach similar quality at about 20 and 30.
QUALITY = {
    "libx264": Quality("crf", 0, 51, 18),
    "libx265": Quality("crf", 0, 51, 20),
    "libvpx-vp9": Quality("crf", 0, 63, 30, (("b", "0"),)),  # b=0: pure constant quality
    "libsvtav1": Quality("crf", 1, 63, 30),
    "h264_nvenc": Quality("cq", 0, 51, 20, (("rc", "vbr"), ("b", "0"))),
    "hevc_nvenc": Quality("cq", 0, 51, 22, (("rc", "vbr"), ("b", "0"))),
    "av1_nvenc": Quality("cq", 0, 63, 30, (("rc", "vbr"), ("b", "0"))),
}
# encoder options always given: x265 prints its settings to stderr otherwise
QUIET = {"libx265": {"x265-params": "log-level=error"}}
# lossless encoders, and the format that stores the model's RGB output exactly
LOSSLESS_RGB = {"ffv1": "bgr0", "utvideo": "gbrp", "png": "rgb24"}
PRESETS = {
    "libx264": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo"),
    "libx265": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo"),
    "libsvtav1": tuple(str(i) for i in range(14)),
    "h264_nvenc": tuple(f"p{i}" for i in range(1, 8)),
    "hevc_nvenc": tuple(f"p{i}" for i in range(1, 8)),
    "av1_nvenc": tuple(f"p{i}" for i in range(1, 8)),
}
_AUDIO_REENCODE = {"webm": ("libopus", 160_000)}  # others: AAC
_AUDIO_DEFAULT = ("aac", 192_000)
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class VideoError(ValueError):
    """A file that cannot be read as a video, or an output that cannot be encoded as asked."""


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in READ_SUFFIXES


def output_suffix(src: Path) -> str:
    """The extension of ``src``'s result written into a folder."""
    ext = src.suffix.lower()
    return ext if ext in WRITE_CONTAINERS else FALLBACK_SUFFIX


def check_output_suffix(path: str | os.PathLike) -> str:
    """The FFmpeg muxer of ``path``'s extension, or :class:`VideoError`."""
    ext = Path(path).suffix.lower()
    if ext not in WRITE_CONTAINERS:
        what = f"extension {ext!r}" if ext else "no extension"
        raise VideoError(f"{path}: {what}: a video is written as {', '.join(sorted(WRITE_CONTAINERS))}")
    return WRITE_CONTAINERS[ext]


def require_av():
    try:
        import av
    except ImportError as e:
        raise VideoError(f"reading and writing video needs PyAV, which is not installed ({e}): "
                         "pip install av") from None
    return av


def _ffmpeg_text(e: BaseException) -> str:
    return str(e).strip() or type(e).__name__


# --- encoder settings -------------------------------------------------------------------

@dataclass
class Encoding:
    """How the video is encoded: the encoder and its options, decided from the arguments
    (:func:`encoding_from_args`) before any input is opened."""

    encoder: str
    crf: int | None = None
    bitrate: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None  # None: chosen per input (:meth:`pixel_format`)
    audio: bool = True

    def options(self) -> dict[str, str]:
        q = QUALITY.get(self.encoder)
        opts: dict[str, str] = dict(QUIET.get(self.encoder, {}))
        if self.bitrate is None and q is not None:
            opts.update(q.extra)
            opts[q.option] = str(q.default if self.crf is None else self.crf)
        if self.preset is not None:
            opts["preset"] = self.preset
        return opts

    def pixel_format(self, input_fmt: str) -> str:
        """The explicit one, else the input's when the encoder takes it (chroma resolution
        and bit depth kept), else yuv420p (what every player decodes). Lossless encoders
        store the RGB output itself."""
        if self.pix_fmt is not None:
            return self.pix_fmt
        if self.encoder in LOSSLESS_RGB:
            return LOSSLESS_RGB[self.encoder]
        av = require_av()
        supported = [f.name for f in (av.codec.Codec(self.encoder, "w").video_formats or [])]
        # yuvj* are the deprecated full-range names: the range travels as a tag instead
        plain = input_fmt.replace("yuvj", "yuv")
        fmt = av.VideoFormat(plain)
        if plain in supported and not fmt.is_rgb and not _has_alpha(fmt) and not fmt.has_palette:
            return plain
        return "yuv420p" if "yuv420p" in supported or not supported else supported[0]


def parse_bitrate(text: str) -> int:
    """``8M``, ``2500k``, ``6000000`` -> bits per second."""
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise VideoError(f"--bitrate {text!r}: expected bits per second, such as 8M, 2500k or 6000000") from None
    if not (1000 <= value < 1e12):
        raise VideoError(f"--bitrate {text}: must be at least 1k bit/s")
    return int(value)


def encoding_from_args(args, container: str) -> Encoding:
    """The encoding that ``--codec``, ``--crf``, ``--bitrate``, ``--preset``, ``--pix-fmt``
    ask for in ``container``; :class:`VideoError` (naming the argument) when they cannot be
    met, before any file is opened."""
    av = require_av()
    name = args.codec or ("vp9" if container == "webm" else "h264")
    encoder = CODEC_ALIASES.get(name.lower(), name)
    try:
        codec = av.codec.Codec(encoder, "w")
    except Exception:
        raise VideoError(f"--codec {name}: not an encoder of PyAV's FFmpeg; choose one of {CODEC_CHOICES}") from None
    if codec.type != "video":
        raise VideoError(f"--codec {name}: a {codec.type} encoder, not a video one; choose one of {CODEC_CHOICES}")
    encoder = codec.name
    supported = _supported_codecs(av, container)
    if supported and encoder not in supported and codec.canonical_name not in supported:
        fits = [c for c in ("h264", "hevc", "vp9", "av1", "ffv1", "prores") if c in supported]
        raise VideoError(f"--codec {name}: the {container} container cannot hold {codec.canonical_name} video "
                         f"(it takes {', '.join(fits) or 'other codecs'})")
    enc = Encoding(encoder, audio=not args.no_audio)
    lossless = encoder in LOSSLESS_RGB or (codec.lossless and not codec.lossy)
    if args.crf is not None or args.bitrate is not None:
        flag = "--crf" if args.crf is not None else "--bitrate"
        if lossless:
            raise VideoError(f"{flag}: {encoder} is lossless; it has no quality setting")
    if args.crf is not None:
        q = QUALITY.get(encoder)
        if q is None:
            raise VideoError(f"--crf: {encoder} has no constant-quality setting here; use --bitrate "
                             f"(--crf works with {', '.join(sorted(QUALITY))})")
        if not (q.lo <= args.crf <= q.hi):
            raise VideoError(f"--crf {args.crf}: {encoder} takes {q.lo}..{q.hi} (lower is better, default {q.default})")
        enc.crf = args.crf
    if args.bitrate is not None:
        enc.bitrate = parse_bitrate(args.bitrate)
    if args.preset is not None:
        known = PRESETS.get(encoder)
        if known is None:
            raise VideoError(f"--preset: {encoder} has no preset here "
                             f"(encoders with presets: {', '.join(sorted(PRESETS))})")
        if args.preset not in known:
            raise VideoError(f"--preset {args.preset}: {encoder} takes {', '.join(known)}")
        enc.preset = args.preset
    if args.pix_fmt is not None:
        formats = [f.name for f in (codec.video_formats or [])]
        if formats and args.pix_fmt not in formats:
            raise VideoError(f"--pix-fmt {args.pix_fmt}: {encoder} takes {', '.join(formats)}")
        enc.pix_fmt = args.pix_fmt
    return enc


def _supported_codecs(av, container: str) -> set[str]:
    with av.open(io.BytesIO(), "w", format=container) as probe:
        return set(probe.supported_codecs)


def _has_alpha(fmt) -> bool:
    return any(c.is_alpha for c in fmt.components)


def subsampling(pix_fmt: str) -> tuple[int, int]:
    """How many pixels share a chroma sample, (across, down): yuv420p (2, 2), yuv422p (2, 1)."""
    av = require_av()
    f = av.VideoFormat(pix_fmt, 16, 16)
    chroma = [c for c in f.components if c.is_chroma]
    if not chroma:
        return 1, 1
    return 16 // chroma[0].width, 16 // chroma[0].height


def bits(pix_fmt: str) -> int:
    av = require_av()
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


# --- reading ------------------------------------------------------------------------------

@dataclass
class VideoInfo:
    width: int
    height: int
    pix_fmt: str
    codec: str
    time_base: Fraction
    rate: Fraction | None  # average frame rate, when known
    frames: int | None  # as the container says or its duration suggests (for progress)
    colorspace: int  # the matrix the frames are read with (a swscale / AVColorSpace value)
    color_range: int  # 1 limited, 2 full
    primaries: int
    trc: int
    sample_aspect: Fraction | None
    audio: list = field(default_factory=list)  # the input's audio streams
    others: list[str] = field(default_factory=list)  # streams that are not carried over

    @property
    def bits(self) -> int:
        return bits(self.pix_fmt)

    @property
    def alpha(self) -> bool:
        return _has_alpha(require_av().VideoFormat(self.pix_fmt))


# AVColorSpace values swscale has coefficients for
_MATRICES = {1, 4, 5, 6, 7, 9, 10}
_BT709, _BT601 = 1, 5


class VideoReader:
    """An open input video: ``info``, then :meth:`packets` (the video stream's and the audio
    streams' packets in file order) and :meth:`to_array` for each decoded frame."""

    def __init__(self, path: str | os.PathLike):
        av = require_av()
        self.path = path = Path(path)
        if not path.exists():
            raise VideoError(f"{path}: no such file")
        if not path.is_file():
            raise VideoError(f"{path}: not a regular file")
        try:
            self.container = av.open(str(path), "r")
        except av.FFmpegError as e:
            raise VideoError(f"{path}: not a readable video ({_ffmpeg_text(e)})") from None
        try:
            self.stream, self.info = self._inspect(av)
        except BaseException:
            self.close()
            raise

    def _inspect(self, av):
        c, path = self.container, self.path
        cover = int(av.stream.Disposition.attached_pic)
        videos = [s for s in c.streams.video if not (int(s.disposition) & cover)]
        if not videos:
            kinds = ", ".join(sorted({s.type for s in c.streams})) or "no streams"
            raise VideoError(f"{path}: no video stream ({kinds})")
        s = videos[0]
        cc = s.codec_context
        if cc is None or not cc.name or cc.name == "none":
            raise VideoError(f"{path}: the video codec (id {s.codec_context and s.codec_context.codec.id}) "
                             "cannot be decoded by PyAV's FFmpeg")
        if not cc.width or not cc.height or cc.format is None:
            raise VideoError(f"{path}: the video stream does not say its size or pixel format "
                             "(a truncated or broken file?)")
        cc.thread_type = "AUTO"  # frame and slice threads: decoding a 4K stream on one core is slow
        w, h, fmt = cc.width, cc.height, cc.format.name
        matrix = cc.colorspace if cc.colorspace in _MATRICES else (_BT709 if w >= 1280 or h >= 720 else _BT601)
        full = fmt.startswith("yuvj") or int(cc.color_range) == 2
        rate = s.average_rate or s.guessed_rate or s.base_rate
        frames = s.frames or None
        if frames is None and rate:
            dur = s.duration * s.time_base if s.duration else Fraction(c.duration, 1_000_000) if c.duration else None
            frames = round(dur * rate) if dur else None
        audio = [a for a in c.streams.audio]
        others = [f"{t.type} stream #{t.index} ({t.codec_context.name if t.codec_context else 'unknown'})"
                  for t in c.streams if t is not s and t.type != "audio"]
        info = VideoInfo(w, h, fmt, cc.name, Fraction(s.time_base), Fraction(rate) if rate else None, frames,
                         matrix, 2 if full else 1, int(cc.color_primaries), int(cc.color_trc),
                         Fraction(s.sample_aspect_ratio) if s.sample_aspect_ratio else None, audio, others)
        return s, info

    def packets(self, audio: bool):
        """The video stream's packets and, with ``audio``, the audio streams', in file order
        (the last of each stream is an empty one that flushes its decoder)."""
        streams = [self.stream] + (self.info.audio if audio else [])
        return self.container.demux(*streams)

    def to_array(self, frame):
        """A decoded frame as ``[h, w, 3]`` uint8, or uint16 when the input has more than 8 bits."""
        return frame.to_ndarray(format="rgb48le" if self.info.bits > 8 else "rgb24",
                                src_colorspace=self.info.colorspace, src_color_range=self.info.color_range)

    def frames(self):
        """Every decoded frame of the video stream (for callers that want only pictures)."""
        return self.container.decode(self.stream)

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_video_frames(path: str | os.PathLike, limit: int | None = None):
    """The first ``limit`` (all with None) frames of a video as ``[h, w, 3]`` arrays, read as
    ``pcsr upscale`` reads them."""
    out = []
    with VideoReader(path) as r:
        for frame in r.frames():
            if limit is not None and len(out) >= limit:
                break
            out.append(r.to_array(frame))
    return out


# --- writing ------------------------------------------------------------------------------

@dataclass
class AudioPlan:
    stream: object  # the input's audio stream
    copy: bool  # packets copied as they are; else decoded and re-encoded
    encoder: str | None = None
    bit_rate: int | None = None
    reason: str = ""  # why it is re-encoded

    def note(self) -> str | None:
        if self.copy:
            return None
        return (f"audio stream #{self.stream.index} ({self.stream.codec_context.name}) re-encoded to "
                f"{self.encoder} at {self.bit_rate // 1000} kbit/s: {self.reason}")


def _reencode(stream, container: str, reason: str) -> AudioPlan:
    enc, rate = _AUDIO_REENCODE.get(container, _AUDIO_DEFAULT)
    return AudioPlan(stream, False, enc, rate, reason)


def plan_audio(info: VideoInfo, container: str, wanted: bool) -> list[AudioPlan]:
    """Copy each audio stream whose codec the container lists, re-encode the others."""
    if not wanted:
        return []
    av = require_av()
    supported = _supported_codecs(av, container)
    plans = []
    for a in info.audio:
        name = a.codec_context.name if a.codec_context else None
        if name and name in supported:
            plans.append(AudioPlan(a, True))
        else:
            plans.append(_reencode(a, container, f"the {container} container cannot hold {name}"))
    return plans


class VideoWriter:
    """An output video of ``size`` (W, H) frames, encoded as ``enc`` says, with the input's
    timing, colour tags and (per ``audio``) its audio streams. ``file`` is a path or a
    file object; ``container`` the FFmpeg muxer."""

    def __init__(self, file, container: str, size: tuple[int, int], info: VideoInfo, enc: Encoding,
                 audio: list[AudioPlan], rotation: int = 0, metadata: dict | None = None):
        av = require_av()
        self.av, self.info, self.enc = av, info, enc
        self.W, self.H = size
        self.pix_fmt = enc.pixel_format(info.pix_fmt)
        self.rgb = "rgb48le" if bits(self.pix_fmt) > 8 else "rgb24"
        # faststart moves the index to the front (playback starts before the download ends);
        # it rewrites the file at the end, so only a real file gets it
        options = {"movflags": "+faststart"} if container in ("mp4", "mov") and isinstance(file, str) else {}
        if enc.encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # the library prints its banner to stdout otherwise
        self.out = av.open(file, "w", format=container, options=options)
        try:
            self._add_streams(av, container, audio, rotation, metadata or {})
        except BaseException:
            self.out.close()
            raise

    def _add_streams(self, av, container, audio, rotation, metadata):
        info, enc = self.info, self.enc
        rate = info.rate or Fraction(25)
        v = self.out.add_stream(enc.encoder, rate=rate, options=enc.options())
        v.width, v.height, v.pix_fmt = self.W, self.H, self.pix_fmt
        # the input's time base, so that every frame keeps its timestamp (variable rates too)
        v.codec_context.time_base = info.time_base
        v.time_base = info.time_base
        if enc.bitrate is not None:
            v.codec_context.bit_rate = enc.bitrate
        rgb_out = av.VideoFormat(self.pix_fmt).is_rgb
        if not rgb_out:
            cc = v.codec_context
            cc.colorspace, cc.color_range = info.colorspace, info.color_range
            if info.primaries != 2:
                cc.color_primaries = info.primaries
            if info.trc != 2:
                cc.color_trc = info.trc
        if info.sample_aspect:
            v.codec_context.sample_aspect_ratio = info.sample_aspect
        if rotation:
            v.set_display_rotation(rotation)
        self.video = v
        self.out.metadata.update(metadata)
        self.audio = {}
        for plan in audio:
            a = plan.stream.codec_context
            # A layout of unknown channel order ("2 channels", as AVI and WAV say) is taken in
            # the usual order, as FFmpeg does: MP4 refuses to store an unordered one.
            layout = _LAYOUTS.get(a.layout.nb_channels, a.layout.name) if a.layout.name.endswith("channels") \
                else a.layout.name
            if plan.copy:
                o = self.out.add_stream_from_template(plan.stream)
                o.codec_context.layout = layout
            else:
                rate = a.sample_rate if plan.encoder != "libopus" else 48000  # Opus runs at 48 kHz
                o = self.out.add_stream(plan.encoder, rate=rate)
                o.layout = layout
                o.codec_context.bit_rate = plan.bit_rate
            o.metadata.update(plan.stream.metadata)
            self.audio[plan.stream.index] = (plan, o)
        try:
            self.out.start_encoding()
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(f"{self.W}x{self.H} {self.pix_fmt} with {enc.encoder} in {container}: the encoder "
                             f"or muxer refused it ({_ffmpeg_text(e)})") from None

    def write(self, frames, times) -> None:
        """``frames [B, H, W, 3]`` uint8 / uint16 (as :attr:`rgb` says), ``times`` their
        ``(pts, duration)`` in the input's time base."""
        av, cs, rng = self.av, self.info.colorspace, self.info.color_range
        for arr, (pts, dur) in zip(frames, times):
            f = av.VideoFrame.from_ndarray(arr, format=self.rgb)
            if f.format.name != self.pix_fmt:
                f = f.reformat(format=self.pix_fmt, dst_colorspace=cs, dst_color_range=rng)
            f.pts, f.time_base = pts, self.info.time_base
            if dur:
                f.duration = dur
            for p in self.video.encode(f):
                self.out.mux(p)

    def write_audio(self, packet) -> None:
        entry = self.audio.get(packet.stream.index)
        if entry is None:
            return
        plan, o = entry
        if plan.copy:
            if packet.dts is None:  # the demuxer's end-of-stream marker
                return
            packet.stream = o
            self.out.mux(packet)
            return
        for frame in packet.decode():  # timestamps in the input's time base; the encoder rebases them
            for p in o.encode(frame):
                self.out.mux(p)

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        for p in self.video.encode(None):
            self.out.mux(p)
        for plan, o in self.audio.values():
            if not plan.copy:
                for p in o.encode(None):
                    self.out.mux(p)
        self.out.close()

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # the file is thrown away; its state does not matter
            pass


def plan_output(info: VideoInfo, size: tuple[int, int], enc: Encoding, container: str,
                audio: bool) -> tuple[str, list[AudioPlan]]:
    """The pixel format and the audio plan of an output, proven by opening the encoders and
    the muxer as the run will, in memory, and closing the file (MP4 checks its audio tracks
    only then): what would fail late fails here, before any work. An audio copy the muxer
    refuses becomes a re-encode. Raises :class:`VideoError`."""
    pix_fmt = enc.pixel_format(info.pix_fmt)
    sx, sy = subsampling(pix_fmt)
    W, H = size
    if W % sx or H % sy:
        need = {(2, 2): "even sizes", (2, 1): "an even width", (1, 2): "an even height"}.get(
            (sx, sy), f"a width divisible by {sx} and a height by {sy}")
        raise VideoError(f"the output would be {W}x{H}, and {pix_fmt} (chroma at 1/{sx} x 1/{sy} resolution) needs "
                         f"{need}: choose a --scale that gives them, or --pix-fmt yuv444p")
    plans = plan_audio(info, container, audio)
    _dry_run(info, size, enc, container, [])  # the video alone: its errors are about the video
    if plans:
        try:
            _dry_run(info, size, enc, container, plans)
        except VideoError:
            for i, p in enumerate(plans):
                if p.copy:
                    try:
                        _dry_run(info, size, enc, container, [p])
                    except VideoError as e:
                        plans[i] = _reencode(p.stream, container, f"the {container} muxer refused a copy "
                                                                  f"({str(e).split(': ', 1)[-1]})")
            _dry_run(info, size, enc, container, plans)
    return pix_fmt, plans


def _dry_run(info, size, enc, container, audio) -> None:
    av = require_av()
    writer = VideoWriter(io.BytesIO(), container, size, info, enc, audio)
    try:
        writer.out.close()
    except (av.FFmpegError, ValueError) as e:
        raise VideoError(f"{enc.encoder} in {container}: the muxer refused it ({_ffmpeg_text(e)})") from None
