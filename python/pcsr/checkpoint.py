"""Loading and saving models.

Two formats are read:

* the authors' release (``torch.save`` of ``{'model': {'name', 'args', 'sd'}, ...}``),
  read with ``torch.load(..., weights_only=True)`` -- never full pickle. Their PCSR
  numbers the branches the other way round (classifier output 0 = light, 1 = heavy); the
  loader maps them to this project's order (branch 0 = heaviest).
* the project's own: one ``.safetensors`` file whose metadata entry ``pcsr_config`` holds
  the model's JSON config (no pickle anywhere).

Bundled models live in ``pcsr/weights/<name>.safetensors`` and are addressed by name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from .atomic import atomic_path
from .backbones import RGB_MEAN
from .model import PCSR, SRModel

FORMAT = "pcsr"
VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, foreign or incompatible."""


def bundled_models() -> dict[str, Path]:
    """Name -> file of every model shipped with the package."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A bundled model's name or a checkpoint path -> an existing file."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = bundled_models()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    if p.exists():
        raise CheckpointError(f"model {str(name_or_path)!r} is not a file")
    names = ", ".join(bundled) or "none"
    raise CheckpointError(f"model {str(name_or_path)!r}: no such file, and no bundled model of that name (bundled: {names})")


# --- model construction from a config --------------------------------------------

def model_from_config(config: dict) -> nn.Module:
    try:
        kind = config["kind"]
        if kind == "pcsr":
            return PCSR(config["backbone"], config.get("backbone_args"), config["upsamplers"], config["classifier"],
                        config.get("rgb_mean", (0, 0, 0)), config.get("rgb_std", (1, 1, 1)))
        if kind == "original":
            return SRModel(config["backbone"], config.get("backbone_args"), config.get("rgb_mean", (0, 0, 0)),
                           config.get("rgb_std", (1, 1, 1)))
    except KeyError as e:
        raise CheckpointError(f"model config lacks the entry {e.args[0]!r}: {config}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"model config is not usable ({e}): {config}") from None
    raise CheckpointError(f"model config has unknown kind {config.get('kind')!r} (expected 'pcsr' or 'original')")


def model_config(model: nn.Module) -> dict:
    kind = "pcsr" if isinstance(model, PCSR) else "original" if isinstance(model, SRModel) else None
    if kind is None:
        raise TypeError(f"cannot save a {type(model).__name__}; expected PCSR or SRModel")
    return {"format": FORMAT, "version": VERSION, "kind": kind, **model.config}


def _load_state(model: nn.Module, state: dict, source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(f"{source}: weights do not fit the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state)


# --- the project's format ----------------------------------------------------------

def save(model: nn.Module, path: str | os.PathLike, info: dict | None = None) -> None:
    """Write ``model`` as safetensors + JSON config, atomically (temp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot save to {path}: folder {path.parent} does not exist")
    config = model_config(model)
    if info:
        config["info"] = info
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"pcsr_config": json.dumps(config)})


def _load_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    if "pcsr_config" not in meta:
        raise CheckpointError(f"{path}: a safetensors file without a pcsr_config entry: not a pcsr checkpoint")
    try:
        config = json.loads(meta["pcsr_config"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: pcsr_config is not valid JSON ({e})") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: config format {config.get('format')!r} is not {FORMAT!r}")
    if int(config.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: written by a newer pcsr (format version {config.get('version')} > {VERSION})")
    return config, state


# --- the authors' format -------------------------------------------------------------

def _hidden(spec: dict) -> list[int]:
    return list(spec["args"]["imnet_spec"]["args"]["hidden_list"])


def official_to_config(model_spec: dict) -> tuple[dict, dict]:
    """The authors' ``{'name', 'args', 'sd'}`` -> (config, state_dict in this project's layout)."""
    name, args, sd = model_spec["name"], model_spec["args"], model_spec["sd"]
    if name == "pcsr-phase1":
        enc = args["encoder_spec"]
        backbone = enc["name"]
        bargs = {k: v for k, v in enc["args"].items() if k != "no_upsampling"}
        config = {"format": FORMAT, "version": VERSION, "kind": "pcsr", "backbone": backbone, "backbone_args": bargs,
                  "upsamplers": [_hidden(args["heavy_sampler_spec"]), _hidden(args["light_sampler_spec"])],
                  "classifier": _hidden(args["classifier_spec"]),
                  "rgb_mean": list(RGB_MEAN[backbone]), "rgb_std": [1.0, 1.0, 1.0]}
        prefixes = {"encoder.": "backbone.", "heavy_sampler.imnet.": "upsamplers.0.",
                    "light_sampler.imnet.": "upsamplers.1.", "classifier.imnet.": "classifier."}
        state = {}
        for k, v in sd.items():
            for old, new in prefixes.items():
                if k.startswith(old):
                    state[new + k[len(old):]] = v
                    break
            else:
                raise CheckpointError(f"unexpected key {k!r} in a pcsr-phase1 checkpoint")
        # Their classifier outputs (light, heavy); this project's branch order is (heavy, light).
        last = max(int(k.split(".")[2]) for k in state if k.startswith("classifier.layers."))
        for suffix in ("weight", "bias"):
            key = f"classifier.layers.{last}.{suffix}"
            state[key] = state[key].flip(0).contiguous()
        return config, state
    if name in ("fsrcnn", "carn", "srresnet"):
        bargs = {k: v for k, v in args.items() if k != "no_upsampling"}
        if args.get("no_upsampling"):
            raise CheckpointError(f"a {name} checkpoint without its upsampling tail is not a complete model")
        config = {"format": FORMAT, "version": VERSION, "kind": "original", "backbone": name, "backbone_args": bargs,
                  "rgb_mean": list(RGB_MEAN[name]), "rgb_std": [1.0, 1.0, 1.0]}
        return config, {"net." + k: v for k, v in sd.items()}
    raise CheckpointError(f"unsupported model {name!r} in the authors' checkpoint (expected pcsr-phase1, fsrcnn, carn, srresnet)")


def _load_torch(path: Path) -> tuple[dict, dict]:
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, truncated pickle, disallowed global, ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not (isinstance(ck, dict) and isinstance(ck.get("model"), dict)
            and {"name", "args", "sd"} <= set(ck["model"])):
        keys = sorted(ck)[:8] if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{path}: not a PCSR checkpoint: expected {{'model': {{'name', 'args', 'sd'}}}}, found {keys}")
    try:
        return official_to_config(ck["model"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: malformed authors' checkpoint (missing {e})") from None


# --- entry point -----------------------------------------------------------------------

def load(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load a bundled model by name, a project checkpoint, or one of the authors' files.

    Returns a :class:`PCSR` or an :class:`SRModel` in eval mode on ``device``.
    """
    path = resolve(name_or_path)
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{path}: file too short ({len(head)} bytes) to be a checkpoint")
    # safetensors: an 8-byte little-endian header length, then the JSON header. Test that
    # first: the length's low byte may well be 0x80, the first byte of a legacy pickle.
    header_len = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and header_len <= path.stat().st_size - 8:
        config, state = _load_safetensors(path)
    elif head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save zip archive / legacy pickle
        config, state = _load_torch(path)
    else:
        config, state = _load_safetensors(path)  # reports what is wrong with the file
    model = model_from_config(config)
    _load_state(model, state, str(path))
    model.checkpoint_info = {"path": str(path), **config.get("info", {})}
    return model.to(device).eval()
