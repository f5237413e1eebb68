"""The training state (``train_state.safetensors``): everything an exact resume needs, in
one file, without pickle.

Tensors: ``model.<name>`` (weights and BatchNorm statistics), ``optim.<i>.<name>`` (Adam's
``step``, ``exp_avg``, ``exp_avg_sq`` of the phase's i-th trainable parameter; none before
the phase's first step, when Adam has no state yet), ``rng.<rank>`` (each rank's crop
generator). JSON metadata ``pcsr_train``: format, version, the model config, ``phase``,
``step`` (completed steps of that phase), ``world_size``, ``param_groups`` (informative:
a resume builds its optimiser from the recipe and loads only the per-parameter state) and
the ``recipe``.

Reading checks the file the way ``checkpoint`` checks a model, before any tensor is read:
the header (bounded), the metadata's types and ranges, the model config (schema,
parameter ceiling, shapes), and that the optimiser entries are exactly those of the
phase's trainable parameters with their shapes (a state that lacks its moments is
refused, not resumed with fresh ones); after reading, the values (finite weights and
moments, non-negative second moments, Adam's step equal to the state's step).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import schema
from .atomic import atomic_path
from .checkpoint import CheckpointError
from .model import PCSR
from .recipe import set_phase

STATE_FORMAT = "pcsr-train"
STATE_VERSION = 1
STATE_FILE = "train_state.safetensors"
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")
MAX_WORLD = 65536
MAX_STEP = 2 ** 40


def save_state(path: Path, model: PCSR, opt: torch.optim.Optimizer, phase: int, step: int,
               rng_states: list[torch.Tensor], meta: dict) -> None:
    """Write the state atomically (a reader sees the previous file or this one, never a mix)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"optim.{idx}.{k}"] = t.detach().cpu().contiguous()
    for r, s in enumerate(rng_states):
        tensors[f"rng.{r}"] = s.cpu().contiguous()
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    info = {"format": STATE_FORMAT, "version": STATE_VERSION, "model_config": ckpt.model_config(model),
            "phase": phase, "step": step, "param_groups": groups, "world_size": len(rng_states), **meta}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"pcsr_train": json.dumps(info)})


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict, source: str) -> None:
    """Load the per-parameter Adam state of a checked file into ``opt`` (built from the recipe,
    whose hyper-parameters are kept)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    if state and sorted(state) != list(range(len(params))):
        raise CheckpointError(f"{source}: the optimiser state does not fit this phase's {len(params)} parameters")
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


# --- reading and checking ---------------------------------------------------------------------

def _fail(path, field: str, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: training state field {field}: {reason}", field=field)


def _int_field(info: dict, key: str, low: int, high: int, path) -> int:
    if key not in info:
        raise _fail(path, key, "missing")
    v = info[key]
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise _fail(path, key, f"expected an integer in {low}..{high}, got {type(v).__name__} {str(v)[:40]}")
    return v


def _rng_size() -> int:
    return torch.Generator().get_state().numel()


def check_state_header(info, tensors: dict[str, tuple[tuple[int, ...], torch.dtype]], path) -> None:
    """Check the metadata and every tensor's name, shape and dtype (from the header)."""
    if not isinstance(info, dict):
        raise _fail(path, "pcsr_train", f"expected a JSON object, got {type(info).__name__}")
    if info.get("format") != STATE_FORMAT:
        raise _fail(path, "format", f"expected {STATE_FORMAT!r}, got {str(info.get('format'))[:40]!r}")
    if isinstance(info.get("version"), int) and info["version"] > STATE_VERSION:
        raise _fail(path, "version", f"written by a newer pcsr (version {info['version']} > {STATE_VERSION})")
    _int_field(info, "version", 1, STATE_VERSION, path)
    config = info.get("model_config")
    model_tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    ckpt.check_config(config, f"{path}: model_config", model_tensors)
    if config["kind"] != "pcsr":
        raise _fail(path, "model_config.kind", f"a training state holds a PCSR model, got {config['kind']!r}")
    M = len(config["upsamplers"])
    phase = _int_field(info, "phase", 0, M - 1, path)
    step = _int_field(info, "step", 0, MAX_STEP, path)
    world = _int_field(info, "world_size", 1, MAX_WORLD, path)
    for key, kind in (("param_groups", list), ("recipe", dict)):
        if not isinstance(info.get(key, kind()), kind):
            raise _fail(path, key, f"expected a JSON {'array' if kind is list else 'object'}, got "
                                   f"{type(info[key]).__name__}")

    # The optimiser's entries: exactly Adam's state of the phase's trainable parameters.
    meta_model = schema.build(config, "meta")
    params = set_phase(meta_model, phase)
    want = {}
    if step > 0:
        for i, p in enumerate(params):
            want[f"optim.{i}.step"] = ((), True)
            want[f"optim.{i}.exp_avg"] = (tuple(p.shape), True)
            want[f"optim.{i}.exp_avg_sq"] = (tuple(p.shape), True)
    want.update({f"rng.{r}": ((_rng_size(),), False) for r in range(world)})
    others = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    missing = sorted(set(want) - set(others), key=_natural)
    if missing:
        what = "optimiser moments" if missing[0].startswith("optim.") else "generator states"
        raise _fail(path, missing[0], f"missing {what} {missing[:4]}{'...' if len(missing) > 4 else ''} (phase "
                                      f"{phase} step {step}, {len(params)} trainable parameters, {world} ranks)")
    extra = sorted(set(others) - set(want), key=_natural)
    if extra:
        why = " (a state at step 0 has no optimiser state)" if step == 0 and extra[0].startswith("optim.") else ""
        raise _fail(path, extra[0], f"unexpected tensors {extra[:4]}{'...' if len(extra) > 4 else ''}{why}")
    for name, (shape, floating) in want.items():
        got_shape, got_dtype = others[name]
        if tuple(got_shape) != shape:
            raise _fail(path, name, f"has shape {tuple(got_shape)}, expected {shape}")
        if floating and not got_dtype.is_floating_point:
            raise _fail(path, name, f"has dtype {got_dtype}, expected a floating-point tensor")
        if not floating and got_dtype != torch.uint8:
            raise _fail(path, name, f"has dtype {got_dtype}, expected torch.uint8 (a generator state)")


def check_state_values(info: dict, tensors: dict[str, torch.Tensor], path) -> None:
    """Values no real run can save: non-finite weights or moments, negative second moments,
    an Adam step that is not the state's step (every trainable parameter takes every step)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _fail(path, name, "holds non-finite values")
        if name.endswith(".exp_avg_sq") and bool((t < 0).any()):
            raise _fail(path, name, "holds negative values (a second moment is a mean of squares)")
        if name.endswith(".step") and name.startswith("optim.") and float(t) != info["step"]:
            raise _fail(path, name, f"is {float(t):g}, but the state is at step {info['step']}")


def _natural(key: str):
    return [int(p) if p.isdigit() else p for p in key.split(".")]


def read_state(path: Path) -> tuple[dict, dict]:
    """(metadata, tensors) of a checked training-state file, or a CheckpointError saying
    what is wrong (``field`` names the entry)."""
    header = ckpt.read_header(path, "training state")
    if "pcsr_train" not in header.metadata:
        raise CheckpointError(f"{path}: not a pcsr training state (no pcsr_train metadata)")
    info = ckpt.parse_json(header.metadata["pcsr_train"], str(path), "pcsr_train")
    check_state_header(info, header.tensors, path)
    tensors = ckpt.read_tensors(path, "training state")
    check_state_values(info, tensors, path)
    return info, tensors

