"""``pcsr upscale``: decide and check everything, then load the model, then run every image.

Order matters for never losing a file and never wasting a run: the arguments, every target
(:mod:`pcsr.targets`) and every input's header are checked before the model is loaded, and
a refusal writes nothing (exit 2). While running, a failed image costs that image only when
errors are continued over (the default for folders and several inputs): each failure is
reported as it happens and again in the summary, and the exit code is 1. Under torchrun the
plan is the same on every rank and each rank runs its share (:mod:`pcsr.shard`).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

from .cli import UsageError

MIN_SCALE, MAX_SCALE = 1 / 32, 64.0


@dataclass
class Result:
    src: str
    dst: str
    status: str  # written | skipped | failed
    seconds: float = 0.0
    heavy: float | None = None
    size: tuple[int, int] | None = None  # (W, H) written
    error: str | None = None
    frames: int | None = None  # a video's


def _say(line: str, fp) -> None:
    """One line past the progress bars, in one write and flushed: under torchrun several
    processes share the output pipe, and a line written in pieces could be split by another
    process's line."""
    from tqdm import tqdm

    with tqdm.external_write_mode(file=fp):
        fp.write(line + "\n")
        fp.flush()


def check_args(args) -> None:
    """What the arguments alone can tell, before any file is looked at."""
    s = args.scale
    if not math.isfinite(s) or not (MIN_SCALE < s <= MAX_SCALE):
        raise UsageError(f"--scale {s:g}: must be a number in (1/32, 64]: the output needs at least 1 pixel per "
                         "side, and the routing costs are measured on a 16x16 input (16 * scale must round to >= 1)")
    if args.tile and not float(s).is_integer():
        raise UsageError(f"--tile needs an integer --scale, got {s:g}")
    if args.quality is not None and not (1 <= args.quality <= 100):
        raise UsageError(f"--quality must be in 1..100, got {args.quality}")


def _probe(jobs, args) -> None:
    """Header checks of every input still to run; a problem becomes the job's error."""
    from .imageio import ImageError, output_format, probe
    from .video import VideoError, check_job, is_video

    for j in jobs:
        if j.skip:
            continue
        if is_video(j.src):
            try:
                check_job(j, args)
            except VideoError as e:
                j.error = str(e) if str(j.src) in str(e) else f"{j.src}: {e}"
            continue
        try:
            head = probe(j.src)
        except ImageError as e:
            j.error = str(e)
            continue
        short = min(head.width, head.height)
        if round(short * args.scale) < 1:
            W, H = round(head.width * args.scale), round(head.height * args.scale)
            j.error = (f"{j.src} ({head.width}x{head.height}) at --scale {args.scale:g} would be {W}x{H} pixels; "
                       f"the output must be at least 1 pixel per side (--scale >= {0.5 / short:.4g} here)")
        elif head.has_alpha and output_format(j.dst) == "JPEG":
            j.error = f"{j.src} has an alpha channel, which JPEG cannot store: write {j.dst.stem}.png, .webp or .tif"


def _infer(model, lr, args, progress=None):
    """The one place where ``pcsr upscale`` runs the model: ``(sr [1,3,H,W], classes [1,H,W])``.
    The whole image when it fits in ``--max-memory``, else exact tiles (:mod:`pcsr.tiling`);
    ``progress(done, total)`` is called per tile."""
    from . import tiling

    return tiling.upscale(model, lr, args.scale, k=args.k, adaptive=args.adaptive, refine=not args.no_refine,
                          max_memory=args.max_memory, tile=args.tile, progress=progress)


class _TileBar:
    """A per-image progress bar, opened on the first tile (whole-image runs have none)."""

    def __init__(self, name: str, enabled: bool):
        self.name, self.enabled, self.bar = name, enabled, None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="tile", desc=self.name, leave=False, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_one(model, job, args, device, bars: bool) -> Result:
    from .imageio import load_image, write_classes, write_image
    from .video import is_video, run_video

    if is_video(job.src):
        return run_video(model, job, args, device, bars)
    t0 = time.perf_counter()
    img = load_image(job.src)
    lr = img.batch().to(device)
    bar = _TileBar(job.src.name, bars)
    try:
        sr, classes = _infer(model, lr, args, bar)
    finally:
        bar.close()
    del lr
    sr = sr[0]
    # the class map first: an existing image then means the job is complete (--skip-existing)
    if job.classes is not None:
        write_classes(job.classes, classes[0], model.num_branches, sr, overwrite=args.overwrite)
    write_image(job.dst, sr, like=img, quality=args.quality, overwrite=args.overwrite)
    heavy = float((classes < model.num_heavy).float().mean())
    return Result(str(job.src), str(job.dst), "written", time.perf_counter() - t0, heavy,
                  (int(sr.shape[-1]), int(sr.shape[-2])))


def _error_text(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return "out of memory"
    return str(e) or type(e).__name__


def run(args) -> int:
    from .imageio import output_format
    from .shard import Shard
    from .targets import PlanError, plan_jobs
    from .video import check_args as check_video_args
    from .video import is_video

    shard = Shard()
    try:
        # Every rank plans before any rank writes (the gather below is the barrier), so all
        # see the same files and make the same plan.
        plan, problem = None, None
        try:
            check_args(args)
            plan = plan_jobs(args.inputs, args.output, save_classes=args.save_classes, suffix=args.suffix,
                             fmt=args.format, overwrite=args.overwrite, skip_existing=args.skip_existing)
            if args.quality is not None and not any(output_format(j.dst) in ("JPEG", "WEBP")
                                                    for j in plan.jobs if not is_video(j.src)):
                raise UsageError("--quality applies to .jpg and .webp outputs")
            check_video_args(args, plan.jobs)
            _probe(plan.jobs, args)
            keep_going = plan.batch if args.continue_on_error is None else args.continue_on_error
            refused = [j for j in plan.jobs if j.error]
            if refused and not keep_going:
                raise UsageError("\n  ".join(j.error for j in refused))
        except (UsageError, PlanError) as e:
            problem = str(e)
        problems = shard.gather(problem)
        if any(problems):
            if problem and (shard.main or not problems[0]):
                raise UsageError(problem)
            return 2
        for note in plan.notes if shard.main else []:
            print(f"pcsr upscale: {note}", file=sys.stderr)

        todo = [j for j in plan.jobs if not j.skip and not j.error]
        results = []
        if shard.main:
            results += [Result(str(j.src), str(j.dst), "skipped") for j in plan.jobs if j.skip]
            for j in refused:
                print(f"pcsr upscale: error: {j.error}", file=sys.stderr)
                results.append(Result(str(j.src), str(j.dst), "failed", error=j.error))
        mine = shard.take(todo)
        if mine:
            results += _run_share(mine, plan.folders, args, shard, keep_going)
        everyone = [r for part in shard.gather(results) for r in part]
        failed = [r for r in everyone if r.status == "failed"]
        if shard.main and (plan.batch or failed or any(r.status == "skipped" for r in everyone)):
            _summary(everyone, len(plan.jobs))
        return 1 if failed or len(everyone) < len(plan.jobs) else 0
    finally:
        shard.close()


def _run_share(jobs, folders, args, shard, keep_going: bool) -> list[Result]:
    from tqdm import tqdm

    from .atomic import TargetError
    from .cli import _load, _setup
    from .imageio import ImageError
    from .model import PCSR

    device = _setup(args, shard)
    model = _load(args.model, device)
    if not isinstance(model, PCSR):
        raise UsageError(f"--model {args.model}: not a PCSR model (a plain {model.config['backbone']} checkpoint)")
    for d in folders:  # new output folders, made only now that everything checked out
        d.mkdir(exist_ok=True)
    show = None if args.progress is None else args.progress  # None: only on a terminal
    bars = shard.main and show is not False and (show or sys.stderr.isatty())
    tag = f"[rank {shard.rank}] " if shard.active else ""
    results: list[Result] = []
    with tqdm(total=len(jobs), unit="img", disable=not (bars and len(jobs) > 1), file=sys.stderr) as bar:
        for job in jobs:
            try:
                r = _run_one(model, job, args, device, bars)
            except (ImageError, TargetError, ValueError, RuntimeError, MemoryError, OSError) as e:
                r = Result(str(job.src), str(job.dst), "failed", error=_error_text(e))
                _say(f"pcsr upscale: {tag}error: {job.src}: {r.error}", sys.stderr)
            else:
                W, H = r.size
                frames = f"{r.frames} frames at {r.frames / r.seconds:.2f} frames/s, " if r.frames else ""
                _say(f"{tag}{job.src} -> {job.dst} ({W}x{H}, {frames}{100 * r.heavy:.1f}% heavy pixels, "
                     f"{r.seconds:.2f} s)", sys.stdout)
            results.append(r)
            bar.update(1)
            if r.status == "failed" and not keep_going:
                break
    return results


def _summary(results: list[Result], planned: int) -> None:
    n = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed")}
    not_run = planned - len(results)
    line = f"{n['written']} written, {n['skipped']} skipped (output exists), {n['failed']} failed"
    if not_run:
        line += f", {not_run} not run (stopped at the first error)"
    secs = sum(r.seconds for r in results if r.status == "written")
    if n["written"]:
        line += f"; {secs:.1f} s summed over the images"
    print(f"pcsr upscale: {line}")
    for r in results:
        if r.status == "failed":
            print(f"  failed: {r.src}: {r.error}", file=sys.stderr)
