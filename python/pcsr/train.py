"""Training PCSR with the authors' multi-stage recipe (DESIGN.md §1), on one process or many.

Phases, for a model with M upsamplers (branch 0 the heaviest):

* phase 0: backbone + upsampler 0, ``L1(bilinear(lr) + U_0, hr)``;
* phase j >= 1: everything trained so far is frozen (``requires_grad=False``, eval mode, so
  BatchNorm keeps its statistics); upsampler j and the classifier (new at j = 1) are trained
  on the soft mixture over the branches ``0..j``::

      pred  = bilinear(lr) + sum_{i<=j} p_i U_i,   p = softmax(classifier logits 0..j)
      loss  = w_recon * L1(pred, hr) + w_avg * L_avg
      L_avg = sum_{i<=j} |sum_n p_ni - N/(j+1)| / (N/(j+1))     (N pixels of the batch)

  which for M = 2 is the authors' form (normalised by N/2). Under DDP the sums run over
  the global batch (a differentiable all-reduce), as on one process.

Each phase has its own Adam (betas 0.9, 0.99, no weight decay) and a cosine schedule from
``lr`` to ``lr_min`` over the phase's iterations, computed from the step (so the schedule's
whole state is the step).

Distributed: under ``torchrun`` every rank builds the same model from the seed, draws its
own crops from its own generator (seeded ``seed * 1000 + rank``) and DistributedDataParallel
averages the gradients (gloo on CPU, nccl on CUDA). ``--batch`` is the global batch, split
over the ranks. One process is the same code with world size 1.

Checkpoint folder (``--out``), all written atomically by rank 0:

* ``train_state.safetensors``: everything a resume needs in one file: ``model.*`` (weights
  and BatchNorm statistics), ``optim.<i>.<name>`` (Adam moments and step per trainable
  parameter), ``rng.<rank>`` (each rank's generator), and JSON metadata ``pcsr_train``
  (model config, phase, step, recipe). No pickle.
* ``model.safetensors``: the model alone in the project format (``pcsr.load`` reads it);
  ``phase<j>.safetensors`` at the end of each phase; ``log.jsonl``: losses and validation.
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
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoint as ckpt
from .backbones import RGB_MEAN
from .checkpoint import CheckpointError
from .data import CropSampler, DataError, find_images, hr_coord, load_images, validation_pairs
from .metrics import psnr
from .model import PCSR, make_mlp_input

STATE_FORMAT = "pcsr-train"
STATE_VERSION = 1
STATE_FILE = "train_state.safetensors"
MODEL_FILE = "model.safetensors"

# The paper's variants (x4): backbone arguments, branch widths (heaviest first), classifier,
# and the authors' learning rate.
VARIANTS = {
    "fsrcnn": dict(backbone_args={"d": 48, "s": 12, "m": 4}, upsamplers=[[58] * 4, [10] * 3], classifier=[], lr=1e-3),
    "carn": dict(backbone_args={"nf": 52, "group": 4}, upsamplers=[[74] * 4, [20] * 3], classifier=[10, 10], lr=2e-4),
    "srresnet": dict(backbone_args={"nf": 58, "nb": 16}, upsamplers=[[170] * 4, [40] * 3], classifier=[20, 20], lr=2e-4),
}


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


# --- model construction ---------------------------------------------------------------------

def branch_widths(heavy: Sequence[int], light: Sequence[int], M: int) -> list[list[int]]:
    """M branches from the variant's heavy and light MLPs: width and depth interpolated
    linearly (rounded) from heavy (branch 0) to light (branch M-1)."""
    if M == 2:
        return [list(heavy), list(light)]
    out = []
    for j in range(M):
        t = j / (M - 1)
        depth = round(len(heavy) + (len(light) - len(heavy)) * t)
        width = round(heavy[0] + (light[0] - heavy[0]) * t)
        out.append([width] * depth)
    return out


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


# --- the per-phase network (what DDP wraps) ---------------------------------------------------

class PhaseNet(nn.Module):
    """PCSR restricted to phase ``phase``: branches ``0..phase`` (the classifier from 1 on).

    Frozen parts run without autograd, so phase j >= 1 costs one backbone forward and the
    frozen MLPs' forwards plus the trainable MLPs' forward and backward.
    """

    def __init__(self, model: PCSR, phase: int, channels_last: bool = False):
        super().__init__()
        self.model, self.phase, self.channels_last = model, phase, channels_last

    def forward(self, lr: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor):
        m, j = self.model, self.phase
        x = m.normalise(lr)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        base = F.grid_sample(x, coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border",
                             align_corners=False)[:, :, 0, :].permute(0, 2, 1)  # [B, Q, 3]
        if j == 0:
            inp = make_mlp_input(m.backbone(x), coord, cell)  # [B, Q, D+4]
            return m.denormalise_points(base + m.upsamplers[0](inp)), None
        with torch.no_grad():
            inp = make_mlp_input(m.backbone(x), coord, cell)
            frozen = [m.upsamplers[i](inp) for i in range(j)]
        probs = torch.softmax(m.classifier(inp)[..., :j + 1], dim=-1)  # [B, Q, j+1]
        preds = torch.stack(frozen + [m.upsamplers[j](inp)], dim=2)  # [B, Q, j+1, 3]
        pred = base + (probs.unsqueeze(-1) * preds).sum(2)
        return m.denormalise_points(pred), probs


def set_phase(model: PCSR, phase: int) -> list[nn.Parameter]:
    """Freeze / unfreeze for ``phase``; returns the trainable parameters (in a fixed order)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    if phase == 0:
        trainable = [model.backbone, model.upsamplers[0]]
    else:
        model.backbone.eval()
        for i in range(phase):
            model.upsamplers[i].eval()
        trainable = [model.upsamplers[phase], model.classifier]
    params = [p for mod in trainable for p in mod.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def phase_loss(pred, probs, gt, cfg: TrainConfig, world: int = 1) -> tuple[torch.Tensor, dict]:
    """The phase's loss on this rank's share of the batch. With ``world > 1`` (an initialised
    process group, equal shares), L_avg is taken over the global batch: the per-branch
    probability sums are all-reduced with a differentiable all-reduce, so that after
    DistributedDataParallel averages the gradients they equal one process's gradient on the
    whole batch (L1 is a mean, which DDP's averaging already makes global)."""
    l1 = (pred - gt).abs().mean()
    if probs is None:
        return l1, {"l1": float(l1.detach())}
    A = probs.shape[-1]
    sums = probs.reshape(-1, A).sum(0)
    if world > 1:
        import warnings

        from torch.distributed.nn.functional import all_reduce  # differentiable (sums the gradients)

        with warnings.catch_warnings():  # deprecated in favour of a private API; still supported
            warnings.simplefilter("ignore", FutureWarning)
            sums = all_reduce(sums)
    target = probs[..., 0].numel() * world / A  # N / A over the global batch
    l_avg = (sums - target).abs().sum() / target
    return cfg.w_recon * l1 + cfg.w_avg * l_avg, {"l1": float(l1.detach()), "l_avg": float(l_avg.detach())}


def cosine_lr(step: int, total: int, lr: float, lr_min: float) -> float:
    """Learning rate before step ``step`` (0-based) of ``total``: cosine from lr to lr_min."""
    return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


# --- validation -----------------------------------------------------------------------------------

@torch.no_grad()
def predict_phase(model: PCSR, lr: torch.Tensor, scale: int, phase: int, chunk: int = 65536) -> torch.Tensor:
    """Full-image SR with the branches of ``phase`` only and hard (argmax) routing among them;
    at the last phase this is the real inference path (``model.forward``, k = 0, refinement)."""
    was_training = model.training
    model.eval()
    try:
        if phase >= model.num_branches - 1:
            return model(lr, scale=scale)[0]
        B, _, h, w = lr.shape
        H, W = h * scale, w * scale
        x = model.normalise(lr)
        feat = model.backbone(x)
        coord = hr_coord(H, W).to(lr).unsqueeze(0).expand(B, -1, -1)
        cell = torch.tensor([2.0 / H, 2.0 / W]).to(lr).expand(B, H * W, 2)
        out = []
        for s in range(0, H * W, chunk):
            c, ce = coord[:, s:s + chunk], cell[:, s:s + chunk]
            inp = make_mlp_input(feat, c, ce)
            base = F.grid_sample(x, c.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border",
                                 align_corners=False)[:, :, 0, :].permute(0, 2, 1)
            if phase == 0:
                res = model.upsamplers[0](inp)
            else:
                cls = model.classifier(inp)[..., :phase + 1].argmax(-1)  # [B, q]
                preds = torch.stack([model.upsamplers[i](inp) for i in range(phase + 1)], dim=2)
                res = torch.gather(preds, 2, cls[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
            out.append(model.denormalise_points(base + res))
        return torch.cat(out, 1).transpose(1, 2).reshape(B, 3, H, W)
    finally:
        model.train(was_training)


def validate(model: PCSR, pairs, scale: int, phase: int, device) -> float:
    vals = [psnr(predict_phase(model, lr.to(device), scale, phase), hr.to(device), shave=scale) for lr, hr in pairs]
    return sum(vals) / len(vals)


# --- checkpoints -----------------------------------------------------------------------------------

def _atomic_save_file(tensors: dict, path: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"optim.{idx}.{k}"] = t.detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: list, source: str) -> None:
    state: dict = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    own = opt.state_dict()
    if len(groups) != len(own["param_groups"]) or any(
            len(g["params"]) != len(o["params"]) for g, o in zip(groups, own["param_groups"])):
        raise CheckpointError(f"{source}: the optimiser state does not fit this phase's parameters")
    for i, st in state.items():
        p = opt.param_groups[0]["params"][i] if len(opt.param_groups) == 1 else None
        if p is not None and "exp_avg" in st and st["exp_avg"].shape != p.shape:
            raise CheckpointError(f"{source}: optimiser state of parameter {i} has shape {tuple(st['exp_avg'].shape)}, "
                                  f"the parameter {tuple(p.shape)}")
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_state(path: Path, model: PCSR, opt, phase: int, step: int, rng_states: list[torch.Tensor],
               meta: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, groups = _optimizer_tensors(opt)
    tensors.update(opt_tensors)
    for r, s in enumerate(rng_states):
        tensors[f"rng.{r}"] = s.cpu().contiguous()
    info = {"format": STATE_FORMAT, "version": STATE_VERSION, "model_config": ckpt.model_config(model),
            "phase": phase, "step": step, "param_groups": groups, "world_size": len(rng_states), **meta}
    _atomic_save_file(tensors, path, {"pcsr_train": json.dumps(info)})


def read_state(path: Path) -> tuple[dict, dict]:
    """(metadata, tensors) of a training-state file, or a CheckpointError saying what is wrong."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated training state ({e})") from None
    if "pcsr_train" not in meta:
        raise CheckpointError(f"{path}: not a pcsr training state (no pcsr_train metadata)")
    try:
        info = json.loads(meta["pcsr_train"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: pcsr_train metadata is not valid JSON ({e})") from None
    if info.get("format") != STATE_FORMAT or int(info.get("version", 0)) > STATE_VERSION:
        raise CheckpointError(f"{path}: unsupported training-state format {info.get('format')!r} v{info.get('version')}")
    return info, tensors


# --- distributed ------------------------------------------------------------------------------------

class Dist:
    """World size / rank from torchrun's environment; a no-op when run as one process."""

    def __init__(self, device_pref: str | None):
        import torch.distributed as dist

        self.dist = dist
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = device_pref == "cuda" or (device_pref is None and torch.cuda.is_available())
        if want_cuda:
            if not torch.cuda.is_available():
                raise TrainError("--device cuda: no CUDA device is available")
            self.device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.active = self.world > 1
        if self.active and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return float(t) / self.world

    def gather_rng(self, state: torch.Tensor) -> list[torch.Tensor]:
        if not self.active:
            return [state]
        t = state.to(self.device)
        out = [torch.empty_like(t) for _ in range(self.world)]
        self.dist.all_gather(out, t)
        return [o.cpu() for o in out]

    def broadcast_flag(self, flag: bool) -> bool:
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        self.dist.broadcast(t, 0)
        return bool(t)

    def barrier(self) -> None:
        if self.active:
            self.dist.barrier()

    def close(self) -> None:
        if self.active and self.dist.is_initialized():
            # DDP's reducer and autograd all-reduce nodes hold the process group, often inside
            # reference cycles; a group still alive after destroy_process_group is torn down at
            # interpreter exit, where gloo aborts the process. Free them first.
            import gc

            gc.collect()
            self.dist.destroy_process_group()


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


class _Log:
    def __init__(self, path: Path | None):
        self.path = path

    def write(self, **rec) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps({"time": round(time.time(), 1), **rec}) + "\n")


def train(cfg: TrainConfig) -> PCSR:
    """Run the recipe described in the module docstring. Returns the trained model (rank 0's
    copy; every rank holds the same weights)."""
    dist = Dist(cfg.device)
    try:
        return _train(cfg, dist)
    finally:
        dist.close()


def _train(cfg: TrainConfig, dist: Dist) -> PCSR:
    device = dist.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.batch % dist.world:
        raise TrainError(f"--batch {cfg.batch} is not divisible by the {dist.world} processes")
    if cfg.crop % cfg.scale or cfg.crop < cfg.scale:
        raise TrainError(f"--crop {cfg.crop} must be a positive multiple of --scale {cfg.scale}")
    if any(i < 0 for i in cfg.iters) or not cfg.iters:
        raise TrainError(f"--iters must be non-negative, got {cfg.iters}")
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
        saved = read_state(state_path)
        arch = saved[0].get("model_config", {})
        if cfg.variant is None:
            cfg.variant = arch.get("backbone")
        if cfg.variant == arch.get("backbone"):  # widths not given: the saved run's
            cfg.upsamplers = cfg.upsamplers or arch.get("upsamplers")
            cfg.classifier = arch.get("classifier") if cfg.classifier is None else cfg.classifier
    if cfg.variant is None:
        cfg.variant = "fsrcnn"
    model = build_model(cfg)
    if cfg.init:
        check_compatible(model, ckpt.model_config(init_model), f"--init {cfg.init}")
        ckpt._load_state(model, init_model.state_dict(), f"--init {cfg.init}")
        init_info = str(cfg.init)
    model.to(device)
    # oneDNN's grouped-conv backward is 3-5x slower in NCHW than in NHWC on CPUs (measured
    # on CARN-M's 13-channel groups); FSRCNN's dense convs are faster in NCHW.
    channels_last = device.type == "cpu" and cfg.variant == "carn"
    if channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    M = model.num_branches
    phases = sorted(set(cfg.phases)) if cfg.phases is not None else list(range(M))
    if not phases or phases[0] < 0 or phases[-1] >= M:
        raise TrainError(f"--phases must lie in 0..{M - 1}, got {cfg.phases}")
    lr0 = cfg.lr if cfg.lr is not None else VARIANTS[cfg.variant]["lr"]

    gen = torch.Generator().manual_seed(cfg.seed * 1000 + dist.rank)
    sampler = CropSampler(images, cfg.crop, cfg.scale, cfg.queries, gen)
    local_batch = cfg.batch // dist.world

    # Resume: one file holds the weights, the optimiser, every rank's generator and the step.
    start_phase, start_step, resume_opt = phases[0], 0, None
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
        start_phase, start_step = int(info["phase"]), int(info["step"])
        resume_opt = ({k: v for k, v in tensors.items() if k.startswith("optim.")}, info["param_groups"])
        phases = [p for p in phases if p >= start_phase]
        if start_phase not in phases:
            phases = [start_phase] + phases

    log = _Log(out / "log.jsonl" if dist.main else None)
    recipe = {k: getattr(cfg, k) for k in ("batch", "crop", "queries", "scale", "seed", "iters", "w_recon", "w_avg",
                                             "lr_min", "data", "variant")}
    recipe["lr"] = lr0
    if dist.main:
        log.write(event="start", world_size=dist.world, device=str(device), resume_from=(start_phase, start_step)
                  if cfg.resume else None, init=init_info, **{k: v for k, v in recipe.items()})

    steps_this_run = 0
    val_psnr = float("nan")
    last_good = str(state_path) if state_path.exists() else None
    for phase in phases:
        total = _iters_for(cfg, phase)
        params = set_phase(model, phase)
        net = PhaseNet(model, phase, channels_last)
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
        opt = torch.optim.Adam(params, lr=lr0, betas=(0.9, 0.99), weight_decay=0.0)
        step = 0
        if resume_opt is not None and phase == start_phase:
            step = start_step
            if step > 0:
                _load_optimizer(opt, resume_opt[0], resume_opt[1], str(state_path))
            resume_opt = None

        def checkpoint(tag: str | None = None):
            nonlocal last_good
            states = dist.gather_rng(gen.get_state())
            if dist.main:
                save_state(state_path, model, opt, phase, step, states, {"recipe": recipe})
                ckpt.save(model, out / MODEL_FILE, _info(cfg, phase, step, total, val_psnr))
                if tag:
                    ckpt.save(model, out / f"{tag}.safetensors", _info(cfg, phase, step, total, val_psnr))
            last_good = str(state_path)
            dist.barrier()

        bar = None
        if dist.main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=step, desc=f"phase {phase}", unit="it", file=sys.stderr, dynamic_ncols=True)
        t_last, n_last = time.perf_counter(), 0
        loss_acc, n_acc = 0.0, 0
        stopped = False
        try:
            while step < total:
                if cfg.stop_after is not None and steps_this_run >= cfg.stop_after:
                    stopped = True
                    break
                b = sampler.batch(local_batch)
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(step, total, lr0, cfg.lr_min)
                pred, probs = net(b.lr.to(device), b.coord.to(device), b.cell.to(device))
                loss, parts = phase_loss(pred, probs, b.gt.to(device), cfg, dist.world)
                loss_val = dist.mean(float(loss.detach()))
                if not math.isfinite(loss_val):
                    where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was written yet"
                    raise TrainError(f"loss is {loss_val} at phase {phase} step {step + 1} "
                                     f"(global step {_global_step(cfg, phase, step + 1)}); stopping ({where})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                steps_this_run += 1
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
        except KeyboardInterrupt:
            checkpoint()
            raise
        finally:
            if bar is not None:
                bar.close()
        if stopped:
            checkpoint()
            if dist.main:
                log.write(event="stopped", phase=phase, step=step)
            return model
        checkpoint(tag=f"phase{phase}")
        if dist.main:
            log.write(event="phase_done", phase=phase, step=step, val_psnr=val_psnr)
    model.eval()
    return model


def _global_step(cfg: TrainConfig, phase: int, step: int) -> int:
    return sum(_iters_for(cfg, p) for p in range(phase)) + step


def _info(cfg: TrainConfig, phase: int, step: int, total: int, val_psnr: float) -> dict:
    info = {"trained_with": "pcsr train", "phase": phase, "step": step, "phase_iters": total,
            "iters": list(cfg.iters), "batch": cfg.batch, "crop": cfg.crop, "queries": cfg.queries,
            "data": [str(d) for d in cfg.data]}
    if math.isfinite(val_psnr):
        info["val_psnr"] = round(val_psnr, 3)
    if cfg.init:
        info["init"] = str(cfg.init)
    return info


# --- command line ----------------------------------------------------------------------------------------

def _widths(s: str) -> list[int]:
    s = s.strip()
    return [int(v) for v in s.split(",")] if s else []


def register(sub) -> None:
    p = sub.add_parser("train", help="train a PCSR model (the authors' multi-stage recipe); torchrun for several processes",
                       description="Train PCSR: phase 0 = backbone + heaviest upsampler (L1); phase j >= 1 = freeze, add "
                                   "upsampler j (and the classifier at j = 1), soft mixture, w_recon*L1 + w_avg*L_avg. "
                                   "Multi-process: torchrun --nproc_per_node N -m pcsr train ...")
    p.add_argument("data", nargs="+", metavar="DATA", help="folders (or files) of HR training images")
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
                      threads=args.threads, progress=not args.no_progress)
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
