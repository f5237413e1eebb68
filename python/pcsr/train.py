"""Training PCSR with the authors' multi-stage recipe (DESIGN.md §1), on one process or many.

The recipe itself (phases, loss, schedule, validation) is in ``recipe.py``; the state file
a resume reads in ``train_state.py``. Each phase has its own Adam (betas 0.9, 0.99, no
weight decay) and a cosine schedule from ``lr`` to ``lr_min`` over the phase's iterations,
computed from the step (so the schedule's whole state is the step).

Distributed: under ``torchrun`` every rank builds the same model from the seed, draws its
own crops from its own generator (seeded ``seed * 1000 + rank``) and DistributedDataParallel
averages the gradients (gloo on CPU, nccl on CUDA). ``--batch`` is the global batch, split
over the ranks. One process is the same code with world size 1.

Checkpoint folder (``--out``), all written atomically by rank 0:

* ``train_state.safetensors``: everything a resume needs (weights, Adam moments, every
  rank's generator, phase and step; see ``train_state.py``). No pickle.
* ``model.safetensors``: the model alone in the project format (``pcsr.load`` reads it);
  ``phase<j>.safetensors`` at the end of each phase.
* ``log.jsonl``: one JSON object per line (start, train, val, phase_done, stopped,
  interrupted). Strict JSON: a value that is not a finite number (a validation PSNR of
  ``inf`` on a perfect match, ``nan`` from a diverged model) is written as ``null`` and its
  key listed in the record's ``"nonfinite"`` object with the value as a string
  (``{"psnr": null, "nonfinite": {"psnr": "inf"}}``), so every line parses with any JSON
  reader and the value is still known.

Exact resume: a run stopped by ``--stop-after``, by SIGINT (Ctrl-C) or by SIGTERM saves the
state of its last completed step and, resumed with ``--resume``, ends bit-identical to an
uninterrupted run (same machine, same thread count). A signal never cuts a step short: it
is noted, the step in progress completes, the state is saved, then ``train`` raises
:class:`TrainInterrupted` (a ``KeyboardInterrupt``); a second signal aborts at once without
saving (``interrupt.py``). Under DDP the ranks agree on the stopping step through the
all-reduce every step already makes.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import schema
from .backbones import RGB_MEAN
from .checkpoint import CheckpointError
from .data import AUTHORS_RESCALE, CropSampler, DataError, find_images, load_images, validation_pairs
from .distributed import Dist
from .interrupt import StopSignals, TrainInterrupted
from .model import PCSR
from .recipe import (VARIANTS, PhaseNet, branch_widths, cosine_lr, phase_loss,  # noqa: F401 (re-exported)
                     predict_phase, set_phase, validate)
from .train_state import STATE_FILE, load_optimizer, read_state, save_state  # noqa: F401 (re-exported)

MODEL_FILE = "model.safetensors"


class TrainError(RuntimeError):
    """Training cannot go on (bad setting, non-finite loss, unwritable folder)."""


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    variant: str | None = "fsrcnn"  # None: that of the run resumed or of --init, else fsrcnn
    branches: int = 2
    upsamplers: list[list[int]] | None = None  # overrides the variant's widths
    classifier: list[int] | None = None
    scale: int = 4
    crop: int = 128
    queries: int | None = None  # per crop; None = all pixels (the authors' recipe)
    batch: int = 16  # global, over all ranks
    iters: list[int] = field(default_factory=lambda: [2_000_000, 500_000])  # per phase; the last repeats
    phases: list[int] | None = None  # which phases to run (default all)
    lr: float | None = None  # default: the variant's
    lr_min: float = 1e-7
    w_recon: float = 1000.0
    w_avg: float = 3.0
    seed: int = 0
    val: list[str] | None = None
    val_every: int = 1000
    val_crop: int | None = 512
    save_every: int = 1000
    log_every: int = 50
    resume: bool = False
    init: str | None = None
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps of this invocation
    device: str | None = None
    threads: int | None = None
    progress: bool = True
    amp: str | None = None  # "bf16": autocast the backbone and MLPs (CUDA; allowed on CPU, slower there)
    compile: bool = False  # torch.compile the per-phase network
    time_budget: float | None = None  # seconds for the whole invocation; caps each phase's iterations
    phase_files: bool = True  # keep phase<j>.safetensors at the end of each phase
    rescale: list[float] | None = None  # scale augmentation factors (data.AUTHORS_RESCALE: the authors')
    heavy_share: float | None = None  # L_avg's target share of the heavy branches (None: 1/M per branch)
    reinit: list[str] | None = None  # modules given fresh (seeded) weights after --init: "classifier", "upsampler<j>"


# --- settings -----------------------------------------------------------------------------------

# TrainConfig field -> the flag of ``pcsr train`` that sets it (error messages name the flag).
FLAGS = {"branches": "--branches", "upsamplers": "--upsamplers", "classifier": "--classifier", "scale": "--scale",
         "crop": "--crop", "queries": "--queries", "batch": "--batch", "iters": "--iters", "phases": "--phases",
         "lr": "--lr", "lr_min": "--lr-min", "w_recon": "--w-recon", "w_avg": "--w-avg", "seed": "--seed",
         "val_every": "--val-every", "val_crop": "--val-crop", "save_every": "--save-every",
         "log_every": "--log-every", "stop_after": "--stop-after", "threads": "--threads",
         "time_budget": "--time-budget"}
MAX_CROP = 4096
MAX_SEED = 2 ** 53  # the crop generator is seeded with seed * 1000 + rank, well inside 64 bits


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(cfg: TrainConfig, name: str, low: int, high: int | None = None, optional: bool = False,
               note: str = "") -> None:
    v = getattr(cfg, name)
    if v is None and optional:
        return
    if not _is_int(v) or v < low or (high is not None and v > high):
        rng = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise TrainError(f"{FLAGS[name]} must be {rng}{note}, got {v!r}")


def _check_float(cfg: TrainConfig, name: str, positive: bool, optional: bool = False) -> None:
    v = getattr(cfg, name)
    if v is None and optional:
        return
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and (v > 0 if positive else v >= 0))
    if not ok:
        raise TrainError(f"{FLAGS[name]} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")


def _check_widths(name: str, widths, what: str) -> None:
    if not isinstance(widths, (list, tuple)) or len(widths) > schema.MAX_HIDDEN_LAYERS or not all(
            _is_int(w) and 1 <= w <= schema.MAX_WIDTH for w in widths):
        raise TrainError(f"{FLAGS[name]}: {what} must be at most {schema.MAX_HIDDEN_LAYERS} widths, each an integer "
                         f"in 1..{schema.MAX_WIDTH}, got {widths!r}")


def check_settings(cfg: TrainConfig) -> None:
    """Every numeric setting in range, before any work; a TrainError naming the flag (the
    CLI turns it into exit code 2)."""
    if cfg.upsamplers is not None:  # first: the CLI sets --branches from it
        if not isinstance(cfg.upsamplers, (list, tuple)) or not 2 <= len(cfg.upsamplers) <= schema.MAX_BRANCHES:
            raise TrainError(f"--upsamplers: 2..{schema.MAX_BRANCHES} branches expected, got {cfg.upsamplers!r}")
        for j, u in enumerate(cfg.upsamplers):
            _check_widths("upsamplers", u, f"branch {j}")
    _check_int(cfg, "branches", 2, schema.MAX_BRANCHES)
    if cfg.classifier is not None:
        _check_widths("classifier", cfg.classifier, "the classifier")
    _check_int(cfg, "scale", 1, schema.MAX_SCALE)
    _check_int(cfg, "crop", cfg.scale, MAX_CROP)
    if cfg.crop % cfg.scale:
        raise TrainError(f"--crop {cfg.crop} must be a multiple of --scale {cfg.scale}")
    _check_int(cfg, "queries", 0, optional=True, note=" (0 = every pixel of the crop)")
    _check_int(cfg, "batch", 1)
    if not isinstance(cfg.iters, (list, tuple)) or not cfg.iters or not all(_is_int(i) and i >= 0 for i in cfg.iters):
        raise TrainError(f"--iters must be one or more integers >= 0, got {cfg.iters!r}")
    if cfg.phases is not None and (not isinstance(cfg.phases, (list, tuple)) or not cfg.phases
                                   or not all(_is_int(p) and 0 <= p < schema.MAX_BRANCHES for p in cfg.phases)):
        raise TrainError(f"--phases must be one or more integers >= 0, got {cfg.phases!r}")
    _check_float(cfg, "lr", positive=True, optional=True)
    _check_float(cfg, "lr_min", positive=False)
    if cfg.lr is not None and cfg.lr_min > cfg.lr:  # a default lr is checked once the variant is known
        raise TrainError(f"--lr-min {cfg.lr_min:g} is above --lr {cfg.lr:g}; the schedule decays from --lr to --lr-min")
    _check_float(cfg, "w_recon", positive=False)
    _check_float(cfg, "w_avg", positive=False)
    _check_int(cfg, "seed", 0, MAX_SEED)
    _check_int(cfg, "val_every", 1)
    _check_int(cfg, "val_crop", cfg.scale, optional=True, note=" (0 = whole images)")
    _check_int(cfg, "save_every", 1)
    _check_int(cfg, "log_every", 1)
    _check_int(cfg, "stop_after", 0, optional=True)
    _check_int(cfg, "threads", 1, 4096, optional=True)
    _check_float(cfg, "time_budget", positive=True, optional=True)
    if cfg.reinit and not cfg.init:
        raise TrainError("--reinit needs --init (the weights the other modules keep)")
    if cfg.heavy_share is not None and not (isinstance(cfg.heavy_share, (int, float)) and 0 < cfg.heavy_share < 1):
        raise TrainError(f"--heavy-share must lie strictly between 0 and 1, got {cfg.heavy_share!r}")
    if cfg.amp not in (None, "bf16"):
        raise TrainError(f"--amp must be 'bf16' or off, got {cfg.amp!r}")


# --- model construction ---------------------------------------------------------------------

def build_model(cfg: TrainConfig) -> PCSR:
    """A freshly initialised PCSR for ``cfg`` (or the architecture of ``cfg.init``)."""
    if cfg.variant not in VARIANTS:
        raise TrainError(f"unknown variant {cfg.variant!r} (expected one of {', '.join(VARIANTS)})")
    v = VARIANTS[cfg.variant]
    if cfg.branches < 2:
        raise TrainError(f"--branches must be >= 2, got {cfg.branches}")
    ups = cfg.upsamplers or branch_widths(v["upsamplers"][0], v["upsamplers"][1], cfg.branches)
    cls = v["classifier"] if cfg.classifier is None else cfg.classifier
    return PCSR(cfg.variant, v["backbone_args"], ups, cls, RGB_MEAN[cfg.variant])


def _same_architecture(a: dict, b: dict) -> bool:
    # backbone_args are not compared here: the authors' files omit defaults (only d=48);
    # a different backbone width is caught by the weight shapes (checkpoint._load_state).
    keys = ("backbone", "upsamplers", "classifier", "rgb_mean", "rgb_std")
    return all(a.get(k) == b.get(k) for k in keys)


def _describe(config: dict) -> str:
    return (f"{config.get('backbone')} PCSR {config.get('backbone_args')}, upsamplers {config.get('upsamplers')}, "
            f"classifier {config.get('classifier')}")


def check_compatible(model: PCSR, config: dict, source: str) -> None:
    """Refuse weights written for another architecture, with a message that says which."""
    own = ckpt.model_config(model)
    if config.get("kind", "pcsr") != "pcsr":
        raise CheckpointError(f"{source}: a plain {config.get('backbone')} model, not a PCSR checkpoint")
    if not _same_architecture(own, config):
        raise CheckpointError(f"{source} holds a {_describe(config)}; this run trains a {_describe(own)}")


# --- the loop ------------------------------------------------------------------------------------------

def _check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise TrainError(f"checkpoint folder {out} is not writable ({e.strerror or e})") from None


def _iters_for(cfg: TrainConfig, phase: int) -> int:
    return int(cfg.iters[min(phase, len(cfg.iters) - 1)])


def _json_safe(rec: dict) -> dict:
    """``rec`` with every non-finite float replaced by None and listed under "nonfinite"
    (key -> "nan" / "inf" / "-inf"); see the module docstring."""
    bad: dict[str, str] = {}

    def clean(v, key):
        if isinstance(v, float) and not math.isfinite(v):
            bad[key] = str(v)
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{key}.{k}") for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{key}[{i}]") for i, x in enumerate(v)]
        return v

    out = {k: clean(v, k) for k, v in rec.items()}
    if bad:
        out["nonfinite"] = bad
    return out


class _Log:
    def __init__(self, path: Path | None):
        self.path = path

    def write(self, **rec) -> None:
        if self.path is not None:
            line = json.dumps(_json_safe({"time": round(time.time(), 1), **rec}), allow_nan=False)
            with open(self.path, "a") as f:
                f.write(line + "\n")


def train(cfg: TrainConfig) -> PCSR:
    """Run the recipe described in the module docstring. Returns the trained model (rank 0's
    copy; every rank holds the same weights)."""
    dist = Dist(cfg.device)
    try:
        return _train(cfg, dist)
    finally:
        dist.close()


def _train(cfg: TrainConfig, dist: Dist) -> PCSR:
    check_settings(cfg)
    device = dist.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.batch % dist.world:
        raise TrainError(f"--batch {cfg.batch} is not divisible by the {dist.world} processes")
    out = Path(cfg.out)
    if dist.main:
        _check_out_dir(out)
    dist.barrier()
    state_path = out / STATE_FILE

    # Data first: a bad folder should fail before any model work.
    paths = find_images(cfg.data)
    images = load_images(paths, cfg.crop)
    val_pairs = validation_pairs(find_images(cfg.val), cfg.scale, cfg.val_crop) if (cfg.val and dist.main) else []

    # Model: same seed on every rank, so the replicas start equal.
    torch.manual_seed(cfg.seed)
    init_info = None
    if cfg.init:
        init_model = ckpt.load(cfg.init)
        if not isinstance(init_model, PCSR):
            raise CheckpointError(f"--init {cfg.init}: a plain {init_model.config['backbone']} model, not a PCSR checkpoint")
        if cfg.variant is None:
            cfg.variant = init_model.config["backbone"]
            cfg.upsamplers = init_model.config["upsamplers"]
            cfg.classifier = init_model.config["classifier"]
            cfg.branches = len(cfg.upsamplers)
    saved = None
    if cfg.resume and state_path.is_file():
        saved = read_state(state_path)  # checked: structure, shapes, values
        arch = saved[0]["model_config"]
        if cfg.variant is None:
            cfg.variant = arch["backbone"]
        if cfg.variant == arch["backbone"]:  # widths not given: the saved run's
            cfg.upsamplers = cfg.upsamplers or arch["upsamplers"]
            cfg.classifier = arch["classifier"] if cfg.classifier is None else cfg.classifier
    if cfg.variant is None:
        cfg.variant = "fsrcnn"
    model = build_model(cfg)
    if cfg.init:
        check_compatible(model, ckpt.model_config(init_model), f"--init {cfg.init}")
        ckpt._load_state(model, init_model.state_dict(), f"--init {cfg.init}")
        init_info = str(cfg.init)
        if cfg.reinit:
            _reinit(model, cfg)
    model.to(device)
    # oneDNN's grouped-conv backward is 3-5x slower in NCHW than in NHWC on CPUs (measured
    # on CARN-M's 13-channel groups); FSRCNN's dense convs are faster in NCHW.
    channels_last = device.type == "cpu" and cfg.variant == "carn"
    if channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    M = model.num_branches
    phases = sorted(set(cfg.phases)) if cfg.phases is not None else list(range(M))
    if phases[-1] >= M:
        raise TrainError(f"--phases must lie in 0..{M - 1}, got {cfg.phases}")
    lr0 = cfg.lr if cfg.lr is not None else VARIANTS[cfg.variant]["lr"]
    if cfg.lr_min > lr0:
        raise TrainError(f"--lr-min {cfg.lr_min:g} is above the {cfg.variant} variant's learning rate {lr0:g}; the "
                         f"schedule decays from --lr to --lr-min")

    gen = torch.Generator().manual_seed(cfg.seed * 1000 + dist.rank)
    sampler = CropSampler(images, cfg.crop, cfg.scale, cfg.queries, gen, device=device, rescale=cfg.rescale)
    local_batch = cfg.batch // dist.world

    # Resume: one file holds the weights, the optimiser, every rank's generator and the step.
    start_phase, start_step, resume_tensors, start_total = phases[0], 0, None, None
    if state_path.exists() and not cfg.resume:
        raise TrainError(f"{out} already holds a run ({STATE_FILE}); pass --resume to continue it or choose another --out")
    if cfg.resume:
        if not state_path.exists():
            raise TrainError(f"--resume: no {STATE_FILE} in {out}")
        info, tensors = saved
        check_compatible(model, info["model_config"], str(state_path))
        ckpt._load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(state_path))
        if info["world_size"] != dist.world:
            raise TrainError(f"{state_path} was written by {info['world_size']} processes; resume with the same number "
                             f"(got {dist.world}) so that every rank continues its own stream of crops")
        for key in ("batch", "crop", "queries", "scale", "seed"):
            if info.get("recipe", {}).get(key) != getattr(cfg, key):
                raise TrainError(f"--resume: {key} was {info.get('recipe', {}).get(key)!r} in the saved run, "
                                 f"now {getattr(cfg, key)!r}; an exact resume needs the same recipe")
        gen.set_state(tensors[f"rng.{dist.rank}"])
        start_phase, start_step = info["phase"], info["step"]
        # A phase cut short by --time-budget ended at its capped total: resuming goes on
        # from there, not up to the phase's --iters.
        saved_total = info.get("phase_iters")
        if _is_int(saved_total) and start_step <= saved_total:
            start_total = saved_total
        resume_tensors = tensors
        phases = [p for p in phases if p >= start_phase]
        if start_phase not in phases:
            phases = [start_phase] + phases

    log = _Log(out / "log.jsonl" if dist.main else None)
    recipe = {k: getattr(cfg, k) for k in ("batch", "crop", "queries", "scale", "seed", "iters", "w_recon", "w_avg",
                                             "lr_min", "data", "variant", "amp", "compile", "time_budget", "rescale",
                                             "heavy_share")}
    recipe["lr"] = lr0
    if dist.main:
        log.write(event="start", world_size=dist.world, device=str(device), resume_from=(start_phase, start_step)
                  if cfg.resume else None, init=init_info, **{k: v for k, v in recipe.items()})

    steps_this_run = 0
    t_start = time.perf_counter()
    amp = torch.bfloat16 if cfg.amp == "bf16" else None
    val_psnr = float("nan")
    last_good = str(state_path) if state_path.exists() else None
    with StopSignals() as signals:
        for phase in phases:
            total = _iters_for(cfg, phase)
            if start_total is not None and phase == start_phase:
                total = start_total
            params = set_phase(model, phase)
            net = PhaseNet(model, phase, channels_last, amp)
            if cfg.compile:
                net = torch.compile(net)
            if dist.active:
                from torch.nn.parallel import DistributedDataParallel as DDP

                net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
            opt = torch.optim.Adam(params, lr=lr0, betas=(0.9, 0.99), weight_decay=0.0)
            step = 0
            if resume_tensors is not None and phase == start_phase:
                step = start_step
                load_optimizer(opt, resume_tensors, str(state_path))
                resume_tensors = None

            def checkpoint(tag: str | None = None):
                nonlocal last_good
                states = dist.gather_rng(gen.get_state())
                if dist.main:
                    meta = {"recipe": recipe}
                    if total != _iters_for(cfg, phase):  # capped by --time-budget
                        meta["phase_iters"] = total
                    save_state(state_path, model, opt, phase, step, states, meta)
                    ckpt.save(model, out / MODEL_FILE, _info(cfg, phase, step, total, val_psnr))
                    if tag and cfg.phase_files:
                        ckpt.save(model, out / f"{tag}.safetensors", _info(cfg, phase, step, total, val_psnr))
                last_good = str(state_path)
                dist.barrier()

            bar = None
            if dist.main and cfg.progress:
                from tqdm import tqdm

                bar = tqdm(total=total, initial=step, desc=f"phase {phase}", unit="it", file=sys.stderr,
                           dynamic_ncols=True)
            t_last, n_last = time.perf_counter(), 0
            loss_acc, n_acc = 0.0, 0
            budget = _PhaseBudget(cfg, phases, phase, step, total, t_start) if cfg.time_budget else None
            stopped = interrupted = False
            # Under DDP a signal may reach one rank only, or the ranks at different steps:
            # they stop together at the step after the all-reduce that first carries it.
            stop_agreed = False
            try:
                while step < total:
                    if cfg.stop_after is not None and steps_this_run >= cfg.stop_after:
                        stopped = True
                        break
                    # A step boundary: everything below runs to its end (see interrupt.py).
                    if stop_agreed or (not dist.active and signals.requested):
                        interrupted = True
                        break
                    b = sampler.batch(local_batch)
                    for g in opt.param_groups:
                        g["lr"] = cosine_lr(step, total, lr0, cfg.lr_min)
                    pred, probs = net(b.lr.to(device), b.coord.to(device), b.cell.to(device))
                    loss, parts = phase_loss(pred, probs, b.gt.to(device), cfg, dist.world)
                    loss_val, stop_agreed = dist.mean_and_any(float(loss.detach()), signals.requested)
                    if not math.isfinite(loss_val):
                        where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was written yet"
                        raise TrainError(f"loss is {loss_val} at phase {phase} step {step + 1} "
                                         f"(global step {_global_step(cfg, phase, step + 1)}); stopping ({where})")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    steps_this_run += 1
                    if budget is not None and step % budget.CHECK_EVERY == 0 and budget.late(dist):
                        stopped = True  # the machine slowed after the cap was set: stop on time, resumable
                        if dist.main:
                            print(f"pcsr train: --time-budget reached at phase {phase} step {step} of {total}; "
                                  f"the state is saved in {state_path} (continue with --resume)",
                                  file=sys.stderr, flush=True)
                        break
                    if budget is not None:
                        capped = budget.update(step, dist)
                        if capped is not None and capped != total:
                            total = capped
                            if bar is not None:
                                bar.total = total
                            if dist.main:
                                log.write(event="time_budget", phase=phase, step=step, iters=total,
                                          steps_per_s=round(budget.rate, 3))
                    loss_acc, n_acc = loss_acc + loss_val, n_acc + 1
                    n_last += cfg.batch
                    if val_pairs and (step % cfg.val_every == 0 or step == total):
                        val_psnr = validate(model, val_pairs, cfg.scale, phase, device)
                        log.write(event="val", phase=phase, step=step, psnr=val_psnr)
                    if step % cfg.log_every == 0 or step == total:
                        now = time.perf_counter()
                        ips = n_last / max(now - t_last, 1e-9)
                        if dist.main:
                            log.write(event="train", phase=phase, step=step, loss=loss_acc / n_acc,
                                      lr=opt.param_groups[0]["lr"], images_per_s=round(ips, 2), **parts)
                        if bar is not None:
                            bar.set_postfix(loss=f"{loss_acc / n_acc:.4g}", val=f"{val_psnr:.2f}dB", img_s=f"{ips:.1f}")
                        t_last, n_last, loss_acc, n_acc = now, 0, 0.0, 0
                    if bar is not None:
                        bar.update(1)
                    if step % cfg.save_every == 0 and step < total:
                        checkpoint()
            finally:
                if bar is not None:
                    bar.close()
            if stopped or interrupted:
                checkpoint()
                if dist.main:
                    log.write(event="interrupted" if interrupted else "stopped", phase=phase, step=step,
                              signal=signals.signal_name if interrupted else None)
                if stopped:
                    return model
                msg = (f"{signals.signal_name or 'a signal on another rank'}: stopped after phase {phase} step {step}; "
                       f"the state is saved in {state_path} (continue with --resume)")
                if dist.main:
                    print(f"pcsr train: {msg}", file=sys.stderr, flush=True)
                raise TrainInterrupted(msg)
            checkpoint(tag=f"phase{phase}")
            if dist.main:
                log.write(event="phase_done", phase=phase, step=step, val_psnr=val_psnr)
    model.eval()
    return model


class _PhaseBudget:
    """Caps a phase's iterations so that the invocation ends within ``--time-budget``.

    The phase's share of the time left is in proportion to its ``--iters`` among the phases
    still to run (a phase that ends early leaves its time to the next). After a few warm-up
    steps (allocator, cuDNN and compile warm-up) the step rate is measured over the next
    ones and the phase's total is set once: ``min(iters, step + rate * share)``; the cosine
    schedule then runs to its end over the capped total. The cap depends on the machine's
    speed, so a budgeted run is repeatable only up to where the cap falls. If the machine
    slows down after that, the deadline stops the run like ``--stop-after`` (checkpoint and
    full state written; ``--resume`` finishes the schedule).
    """

    WARMUP, MEASURE = 5, 20
    RESERVE = 0.03  # of the budget, plus 5 s: the final checkpoints and the export
    CHECK_EVERY = 10  # steps between deadline checks (one small all-reduce under DDP)

    def __init__(self, cfg: TrainConfig, phases: list[int], phase: int, step: int, total: int, t_start: float):
        self.cfg, self.t_start, self.total = cfg, t_start, total
        rest = [p for p in phases if p >= phase]
        weights = [_iters_for(cfg, p) for p in rest]
        self.share = weights[0] / max(sum(weights), 1)
        self.first = step
        self.t0 = None
        self.rate = float("nan")
        self.done = False

    def late(self, dist: Dist) -> bool:
        """Past the budget on any rank, once the cap is set. The cap is set from one measured
        rate (aiming at the budget less the reserve); when the machine slows down afterwards
        (other jobs, thermal limits) the run would overshoot, so the deadline is checked too."""
        if not self.done:  # the cap is not set yet (it leaves the measured steps in any case)
            return False
        late = time.perf_counter() - self.t_start > float(self.cfg.time_budget)
        return -dist.min_int(-int(late)) > 0

    def update(self, step: int, dist: Dist) -> int | None:
        if self.done:
            return None
        n = step - self.first
        if n == self.WARMUP:
            self.t0 = time.perf_counter()
        if n < self.WARMUP + self.MEASURE:
            return None
        now = time.perf_counter()
        self.rate = self.MEASURE / max(now - self.t0, 1e-9)
        budget = float(self.cfg.time_budget)
        left = budget * (1 - self.RESERVE) - 5.0 - (now - self.t_start)
        extra = max(0, int(self.rate * max(left, 0.0) * self.share))
        cap = min(self.total, step + extra)
        cap = dist.min_int(cap)  # every rank must stop at the same step
        self.done = True
        return cap


def _reinit_module(model: PCSR, name: str) -> torch.nn.Module:
    if name == "classifier":
        return model.classifier
    if name.startswith("upsampler") and name[len("upsampler"):].isdigit():
        j = int(name[len("upsampler"):])
        if j < model.num_branches:
            return model.upsamplers[j]
    raise TrainError(f"--reinit: unknown module {name!r} (classifier, or upsampler0..upsampler{model.num_branches - 1})")


def _reinit(model: PCSR, cfg: TrainConfig) -> None:
    """Give the modules named in ``cfg.reinit`` the weights a fresh model of seed
    ``cfg.seed`` has (so the result is repeatable); the rest keep the --init weights."""
    targets = [_reinit_module(model, n) for n in cfg.reinit]
    torch.manual_seed(cfg.seed)
    fresh = build_model(cfg)
    for name, mod in zip(cfg.reinit, targets):
        mod.load_state_dict(_reinit_module(fresh, name).state_dict())


def _global_step(cfg: TrainConfig, phase: int, step: int) -> int:
    return sum(_iters_for(cfg, p) for p in range(phase)) + step


def _info(cfg: TrainConfig, phase: int, step: int, total: int, val_psnr: float) -> dict:
    info = {"trained_with": "pcsr train", "phase": phase, "step": step, "phase_iters": total,
            "iters": list(cfg.iters), "batch": cfg.batch, "crop": cfg.crop, "queries": cfg.queries,
            "data": [str(d) for d in cfg.data]}
    if cfg.rescale:
        info["rescale"] = list(cfg.rescale)
    if cfg.heavy_share is not None:
        info["heavy_share"] = cfg.heavy_share
    if cfg.reinit:
        info["reinit"] = list(cfg.reinit)
    if cfg.amp:
        info["amp"] = cfg.amp
    if math.isfinite(val_psnr):
        info["val_psnr"] = round(val_psnr, 3)
    if cfg.init:
        info["init"] = str(cfg.init)
    return info


# --- command line ----------------------------------------------------------------------------------------

def _widths(s: str) -> list[int]:
    s = s.strip()
    return [int(v) for v in s.split(",")] if s else []


def add_arguments(p) -> None:
    """Fill the ``pcsr train`` parser (listed in pcsr.cli.COMMANDS)."""
    p.description = ("Train PCSR: phase 0 = backbone + heaviest upsampler (L1); phase j >= 1 = freeze, add "
                     "upsampler j (and the classifier at j = 1), soft mixture, w_recon*L1 + w_avg*L_avg. "
                     "Multi-process: torchrun --nproc_per_node N -m pcsr train ...")
    p.add_argument("data", nargs="+", metavar="DATA",
                   help="folders (or files) of HR training images, or packs of pre-cut tiles (.pack)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder (created if missing)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default=None,
                   help="architecture (default: that of the run being resumed, of --init, or fsrcnn)")
    p.add_argument("--branches", type=int, default=2, metavar="M", help="number of upsamplers M >= 2 (default 2)")
    p.add_argument("--upsamplers", metavar="W;W;...", help="hidden widths per branch, heaviest first, e.g. '58,58,58,58;10,10,10'")
    p.add_argument("--classifier", metavar="W,...", help="classifier hidden widths ('' = one Linear)")
    p.add_argument("--scale", type=int, default=4, help="integer scale (default 4)")
    p.add_argument("--crop", type=int, default=128, help="HR crop side (default 128)")
    p.add_argument("--queries", type=int, default=0, help="query pixels per crop (default 0 = all, the authors' recipe)")
    p.add_argument("--batch", type=int, default=16, help="global batch over all processes (default 16)")
    p.add_argument("--iters", type=int, nargs="+", default=[2_000_000, 500_000], metavar="N",
                   help="iterations per phase; the last value repeats (default 2000000 500000)")
    p.add_argument("--phases", type=int, nargs="+", metavar="J", help="run only these phases (default all)")
    p.add_argument("--lr", type=float, help="initial learning rate (default 1e-3 fsrcnn, 2e-4 carn/srresnet)")
    p.add_argument("--lr-min", type=float, default=1e-7, help="cosine schedule floor (default 1e-7)")
    p.add_argument("--w-recon", type=float, default=1000.0, help="L1 weight in phases >= 1 (default 1000)")
    p.add_argument("--w-avg", type=float, default=3.0, help="L_avg weight in phases >= 1 (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", nargs="+", metavar="HR", help="held-out folders (or files) for validation PSNR")
    p.add_argument("--val-every", type=int, default=1000, metavar="N")
    p.add_argument("--val-crop", type=int, default=512, metavar="PX",
                   help="validate on a centre crop of at most PX HR pixels per side (0 = whole images; default 512)")
    p.add_argument("--save-every", type=int, default=1000, metavar="N")
    p.add_argument("--log-every", type=int, default=50, metavar="N")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--init", metavar="MODEL", help="start from these weights (bundled name, project checkpoint or the authors' .pth)")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N steps of this invocation (a checkpoint is written)")
    p.add_argument("--export", metavar="PATH", help="also write the final model here (project format)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--amp", choices=["off", "bf16"], default="off",
                   help="bf16 autocast of the backbone and MLPs (GPU; the loss and the output sum stay float32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the per-phase network (off by default)")
    p.add_argument("--reinit", nargs="+", metavar="MODULE",
                   help="with --init: start these modules afresh (seeded): classifier, upsampler<j>")
    p.add_argument("--heavy-share", type=float, metavar="F",
                   help="L_avg's target: the heavy branches' share of the probability mass in phases >= 1 "
                        "(default: the authors' equal shares, 1/M per branch)")
    p.add_argument("--rescale", type=float, nargs="*", metavar="S",
                   help="scale augmentation: cut each crop at crop/S and reduce it (MATLAB bicubic), S drawn from "
                        "these factors in proportion to S^2; the flag alone gives the authors' 1 0.9 0.8 0.7 0.6")
    p.add_argument("--no-phase-files", action="store_true",
                   help="do not keep a phase<j>.safetensors copy at the end of each phase (model.safetensors holds "
                        "the latest weights either way)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="end within this many seconds: each phase's iterations are capped from the measured step "
                        "rate, in proportion to --iters (the cosine schedule then ends on time)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .cli import UsageError

    try:
        ups = None
        if args.upsamplers:
            ups = [_widths(s) for s in args.upsamplers.split(";")]
            if any(not u for u in ups):
                raise UsageError("--upsamplers: every branch needs at least one hidden width")
        cls = _widths(args.classifier) if args.classifier is not None else None
    except ValueError:
        raise UsageError("--upsamplers / --classifier: comma-separated integers expected") from None
    variant = args.variant  # None: the resumed run's, --init's, or fsrcnn
    cfg = TrainConfig(data=args.data, out=args.out, variant=variant, branches=len(ups) if ups else args.branches,
                      upsamplers=ups, classifier=cls, scale=args.scale, crop=args.crop, queries=args.queries or None,
                      batch=args.batch, iters=args.iters, phases=args.phases, lr=args.lr, lr_min=args.lr_min,
                      w_recon=args.w_recon, w_avg=args.w_avg, seed=args.seed, val=args.val, val_every=args.val_every,
                      val_crop=args.val_crop or None, save_every=args.save_every, log_every=args.log_every,
                      resume=args.resume, init=args.init, stop_after=args.stop_after, device=args.device,
                      threads=args.threads, progress=not args.no_progress,
                      amp=None if args.amp == "off" else args.amp, compile=args.compile, time_budget=args.time_budget,
                      phase_files=not args.no_phase_files,
                      rescale=None if args.rescale is None else (list(args.rescale) or list(AUTHORS_RESCALE)),
                      heavy_share=args.heavy_share, reinit=args.reinit)
    if args.export:
        from .imageio import ImageError, check_writable

        try:
            check_writable(args.export)
        except ImageError as e:
            raise UsageError(f"--export: {e}") from None
    try:
        model = train(cfg)
    except (TrainError, DataError, CheckpointError) as e:
        raise UsageError(str(e)) from None
    if args.export and int(os.environ.get("RANK", "0")) == 0:
        final = ckpt.load(Path(cfg.out) / MODEL_FILE)
        info = {k: v for k, v in final.checkpoint_info.items() if k != "path"}
        ckpt.save(final, args.export, info)
    return 0
