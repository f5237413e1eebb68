"""Where each input of ``pcsr upscale`` goes, decided and checked before any work is done.

Nothing is ever lost: a plan is refused (:class:`PlanError`, naming the files) when an
output would overwrite an input, when two inputs map to one output, when a class map and an
image share a path, when a target exists and is not a regular file (a symlink, a device, a
folder), and -- unless ``overwrite`` or ``skip_existing`` -- when a target exists. Paths are
compared resolved (symlinks, ``./a.png`` against ``a.png``) and by inode (hard links).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .atomic import TargetError, check_target
from .imageio import READ_SUFFIXES, WRITE_FORMATS, ImageError, output_format
from .videoio import READ_SUFFIXES as VIDEO_SUFFIXES
from .videoio import WRITE_CONTAINERS, VideoError, check_output_suffix, is_video, output_suffix

DEFAULT_FORMAT = "png"
_LIST = 8  # files named in one message, at most


class PlanError(ValueError):
    """A plan that could lose a file, or that cannot be carried out; nothing was written."""


@dataclass
class Job:
    src: Path
    dst: Path
    classes: Path | None = None
    skip: bool = False  # the output exists and skip_existing: left alone
    error: str | None = None  # refused before the run (set by the caller's checks)


@dataclass
class Plan:
    jobs: list[Job]
    batch: bool  # several inputs or a folder: results go into a folder
    folders: list[Path]  # output folders to create before the first write
    notes: list[str]


def _names(paths, n: int = _LIST) -> str:
    paths = [str(p) for p in paths]
    more = f" and {len(paths) - n} more" if len(paths) > n else ""
    return ", ".join(paths[:n]) + more


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[bool]]:
    """Files named and the images and videos of folders named (sorted by name, hidden files
    left out), with whether each came from a folder. The same file given twice counts once."""
    files: list[Path] = []
    from_folder: list[bool] = []
    seen: set[str] = set()
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.suffix.lower() in READ_SUFFIXES | VIDEO_SUFFIXES and not q.name.startswith(".")
                           and q.is_file())
            if not found:
                raise PlanError(f"{p}: folder holds no images ({', '.join(sorted(READ_SUFFIXES))}) "
                                f"nor videos ({', '.join(sorted(VIDEO_SUFFIXES))})")
            new = [(q, True) for q in found]
        elif p.is_file():
            new = [(p, False)]
        elif p.exists():
            raise PlanError(f"{p}: not a regular file (a device, pipe or socket cannot be read as an image)")
        else:
            raise PlanError(f"{p}: no such file or folder")
        for q, folder in new:
            key = os.path.realpath(q)
            if key not in seen:
                seen.add(key)
                files.append(q)
                from_folder.append(folder)
    return files, from_folder


class _Inputs:
    """The inputs, looked up by resolved path and by inode (hard links)."""

    def __init__(self, inputs: list[Path]):
        self.by_path = {os.path.realpath(p): p for p in inputs}
        self.by_inode = {}
        for p in inputs:
            st = os.stat(p)
            self.by_inode[(st.st_dev, st.st_ino)] = p

    def find(self, target: Path) -> Path | None:
        hit = self.by_path.get(os.path.realpath(target))
        if hit is None:
            try:
                st = os.stat(target)
            except OSError:
                return None
            hit = self.by_inode.get((st.st_dev, st.st_ino))
        return hit


def plan_jobs(inputs: list[str], output: str, *, save_classes: str | None = None, suffix: str = "",
              fmt: str | None = None, overwrite: bool = False, skip_existing: bool = False) -> Plan:
    """Decide every target of ``pcsr upscale INPUTS -o OUTPUT`` and refuse any that could
    lose a file (see the module docstring). ``fmt``: the extension of images written into
    a folder (default png); a file output's extension chooses its format. A video stays a
    video: into a folder it keeps its container (:func:`pcsr.videoio.output_suffix`), and
    its class map is a video too."""
    if overwrite and skip_existing:
        raise PlanError("--overwrite and --skip-existing exclude each other")
    if any(sep in suffix for sep in ("/", os.sep)) or suffix in (".", ".."):
        raise PlanError(f"--suffix {suffix!r}: a suffix cannot hold a path separator")
    files, from_folder = expand_inputs(inputs)
    batch = len(files) > 1 or any(from_folder)
    out = Path(output)
    as_folder = batch or out.is_dir() or output.endswith(("/", os.sep))
    folders: list[Path] = []
    notes: list[str] = []
    ext = "." + (fmt or DEFAULT_FORMAT).lower().lstrip(".")
    try:
        output_format("x" + ext)
    except ImageError:
        raise PlanError(f"--format {fmt!r}: choose one of {', '.join(sorted(e[1:] for e in WRITE_FORMATS))}") from None

    if as_folder:
        if out.exists() and not out.is_dir():
            raise PlanError(f"-o {out}: with several inputs or a folder the output must be a folder, and this is a file")
        if not out.exists():
            if out.suffix.lower() in WRITE_FORMATS or out.suffix.lower() in WRITE_CONTAINERS:
                raise PlanError(f"-o {out}: with several inputs or a folder the output must be a folder "
                                f"(an existing one, or a new one without an image or video extension)")
            if not out.parent.is_dir():
                raise PlanError(f"-o {out}: folder {out.parent} does not exist")
            folders.append(out)
        dsts = [out / f"{p.stem}{suffix}{output_suffix(p) if is_video(p) else ext}" for p in files]
    else:
        if suffix:
            raise PlanError("--suffix names the files written into an output folder; -o names a file here")
        _check_kind("-o", out, files[0])
        if is_video(files[0]):
            if fmt is not None:
                raise PlanError(f"--format {fmt}: the format of images written into a folder; -o {out} is a video")
        else:
            out_fmt = output_format(out)
            if fmt is not None and WRITE_FORMATS.get(ext) != out_fmt:
                raise PlanError(f"--format {fmt} disagrees with -o {out}: the file's extension chooses its format")
        if not out.parent.is_dir():
            raise PlanError(f"-o {out}: folder {out.parent} does not exist")
        dsts = [out]

    cls_dsts: list[Path | None] = [None] * len(files)
    if save_classes:
        cs = Path(save_classes)
        if batch or cs.is_dir() or save_classes.endswith(("/", os.sep)):
            if cs.exists() and not cs.is_dir():
                raise PlanError(f"--save-classes {cs}: with several inputs it must be a folder, and this is a file")
            if not cs.exists():
                if not cs.parent.is_dir():
                    raise PlanError(f"--save-classes {cs}: folder {cs.parent} does not exist")
                if cs not in folders:
                    folders.append(cs)
            cls_dsts = [cs / f"{p.stem}{suffix}_classes{output_suffix(p) if is_video(p) else '.png'}" for p in files]
        else:
            _check_kind("--save-classes", cs, files[0])
            if not cs.parent.is_dir():
                raise PlanError(f"--save-classes {cs}: folder {cs.parent} does not exist")
            cls_dsts = [cs]

    # Re-running into the input folder: the folder now also holds the last run's outputs
    # (a_x4.png, the target of a.png with --suffix _x4; a_classes.png, its class map with
    # --save-classes); they are results, not new inputs. Without a suffix an image target
    # that is an input is a collision, refused below.
    images = {os.path.realpath(d) for d in dsts} if suffix else set()
    maps = {os.path.realpath(c) for c in cls_dsts if c is not None}
    own = [from_folder[i] and ((key := os.path.realpath(p)) in images and p.stem.endswith(suffix)
                               or key in maps and p.stem.endswith(f"{suffix}_classes"))
           and os.path.realpath(dsts[i]) != key
           for i, p in enumerate(files)]
    if any(own):
        dropped = [p for p, o in zip(files, own) if o]
        notes.append(f"left out {len(dropped)} file(s) that are this command's own outputs: {_names(dropped, 3)}")
        files = [p for p, o in zip(files, own) if not o]
        dsts = [d for d, o in zip(dsts, own) if not o]
        cls_dsts = [c for c, o in zip(cls_dsts, own) if not o]

    jobs = [Job(src, dst, cdst) for src, dst, cdst in zip(files, dsts, cls_dsts)]
    _check_collisions(jobs, files, as_folder)
    _check_existing(jobs, overwrite, skip_existing)
    for d in {j.dst.parent for j in jobs} | {j.classes.parent for j in jobs if j.classes is not None}:
        if d.is_dir() and not os.access(d, os.W_OK):
            raise PlanError(f"cannot write into {d}: folder is not writable")
    return Plan(jobs, batch, folders, notes)


def _check_kind(flag: str, target: Path, src: Path) -> None:
    """A file target has the extension of what ``src`` becomes: an image, or a video."""
    video, ext = is_video(src), target.suffix.lower()
    if video and ext in WRITE_FORMATS:
        raise PlanError(f"{flag} {target}: {src} is a video, and a video is written as a video "
                        f"({', '.join(sorted(WRITE_CONTAINERS))})")
    if not video and ext in WRITE_CONTAINERS:
        raise PlanError(f"{flag} {target}: {src} is an image, and this names a video; an image is written as "
                        f"{', '.join(sorted(WRITE_FORMATS))}")
    try:
        check_output_suffix(target) if video else output_format(target)
    except (ImageError, VideoError) as e:
        raise PlanError(f"{flag} {e}") from None


def _check_collisions(jobs: list[Job], inputs: list[Path], as_folder: bool) -> None:
    problems: list[str] = []
    known = _Inputs(inputs)
    by_target: dict[str, list[Job]] = {}
    for j in jobs:
        by_target.setdefault(os.path.realpath(j.dst), []).append(j)
    for group in by_target.values():
        if len(group) > 1:
            problems.append(f"{_names([j.src for j in group])} would all be written to {group[0].dst}")
    for j in jobs:
        src = known.find(j.dst)
        if src is not None:
            hint = " (use --suffix or another output folder)" if as_folder and src == j.src else ""
            problems.append(f"{j.dst} would overwrite the input {src}{hint}")
    class_targets: dict[str, Job] = {}
    for j in jobs:
        if j.classes is None:
            continue
        key = os.path.realpath(j.classes)
        if key in by_target:
            problems.append(f"the class map of {j.src} and the image of {by_target[key][0].src} would share "
                            f"the path {j.classes}")
        elif key in class_targets:
            problems.append(f"the class maps of {class_targets[key].src} and {j.src} would share the path {j.classes}")
        class_targets[key] = j
        src = known.find(j.classes)
        if src is not None:
            problems.append(f"the class map {j.classes} would overwrite the input {src}")
    if problems:
        shown = problems[:_LIST] + ([f"... and {len(problems) - _LIST} more"] if len(problems) > _LIST else [])
        raise PlanError("refusing to lose a file:\n  " + "\n  ".join(shown))


def _check_existing(jobs: list[Job], overwrite: bool, skip_existing: bool) -> None:
    bad: list[str] = []
    existing: list[Path] = []
    for j in jobs:
        for t in (j.dst, j.classes):
            if t is None:
                continue
            try:
                check_target(t, overwrite=True)
            except TargetError as e:
                bad.append(str(e))
        if skip_existing and j.dst.exists():
            # The class map is written before the image, so an existing image means done.
            j.skip = True
            continue
        if not overwrite:
            existing += [t for t in (j.dst, j.classes) if t is not None and os.path.lexists(t)]
    if bad:
        raise PlanError("refusing to replace what is not a regular file:\n  " + "\n  ".join(bad[:_LIST]))
    if existing:
        raise PlanError(f"{len(existing)} output(s) exist: {_names(existing)}; --overwrite replaces them, "
                        "--skip-existing keeps them and does the rest")
