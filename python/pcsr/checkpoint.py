"""Loading and saving models.

Two formats are read:

* the authors' release (``torch.save`` of ``{'model': {'name', 'args', 'sd'}, ...}``),
  read with ``torch.load(..., weights_only=True)`` -- never full pickle. Their PCSR
  numbers the branches the other way round (classifier output 0 = light, 1 = heavy); the
  loader maps them to this project's order (branch 0 = heaviest).
* the project's own: one ``.safetensors`` file whose metadata entry ``pcsr_config`` holds
  the model's JSON config (no pickle anywhere).

Nothing is built from a file before it is checked (``schema.py``): the safetensors
header is read with a bounded length and parsed here, the config is validated field by
field, the model it describes is sized on the meta device against a parameter ceiling,
and every tensor's name, shape and dtype in the header is compared with that model's;
only then are the weights read and the model built. The authors' files get the same
treatment after ``torch.load`` (whose allocations are bounded by the file's size: a
tensor's storage is stored in the file). Every failure is a :class:`CheckpointError`;
those caused by one config field carry its name in ``field``.

Bundled models live in ``pcsr/weights/<name>.safetensors`` and are addressed by name.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import schema
from .atomic import atomic_path
from .backbones import RGB_MEAN
from .model import PCSR, SRModel
from .schema import FORMAT, VERSION, ConfigError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# A model's header is a few kB (a name, dtype, shape and offsets per tensor, plus the
# config); a training state's a few tens of kB. 16 MiB bounds what a header-length field
# can make the loader read, far above any real file.
MAX_HEADER_BYTES = 16 * 2 ** 20
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, foreign or incompatible.

    ``field``: the config field (or the authors' entry) at fault, when there is one.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


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

def check_config(config: Any, source: str, tensors: dict | None = None) -> dict:
    """Validate ``config`` (and, given the file's ``tensors`` as name -> (shape, dtype),
    that they fit the model it describes) without allocating any weight."""
    try:
        schema.validate_config(config)
        if tensors is not None:
            schema.check_tensors(config, tensors)
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}", field=e.field) from None
    return config


def model_from_config(config: Any, source: str = "model config") -> nn.Module:
    """The (randomly initialised) model a config describes, after checking the config."""
    check_config(config, source)
    try:
        schema.expected_tensors(config)  # the parameter ceiling, before any real allocation
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}", field=e.field) from None
    return schema.build(config)


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


@dataclass
class Header:
    """What a safetensors file declares, read without touching its tensors."""

    metadata: dict[str, str]
    tensors: dict[str, tuple[tuple[int, ...], torch.dtype]]  # name -> (shape, dtype)


def parse_json(text: str, source: str, what: str) -> Any:
    """``json.loads`` whose every failure (syntax, nesting deep enough to exhaust the
    recursion limit) is a CheckpointError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{source}: {what} is nested too deeply to be a config", field=what) from None
    except ValueError as e:  # JSONDecodeError, and str/int conversion limits
        raise CheckpointError(f"{source}: {what} is not valid JSON ({e})", field=what) from None


def read_header(path: str | os.PathLike, what: str = "safetensors file") -> Header:
    """Parse a safetensors header (bounded, validated: every tensor's bytes lie inside the
    file and match its dtype and shape) without reading any tensor."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: corrupt or truncated {what} ({size} bytes, no header)")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise CheckpointError(f"{path}: corrupt or truncated {what} (header length {n:,} bytes; the "
                                  f"file has {size:,} bytes, the limit is {MAX_HEADER_BYTES:,})")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: corrupt or truncated {what} (header is not UTF-8)") from None
    header = parse_json(text, str(path), "safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt or truncated {what} (header is a {type(header).__name__})")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"{path}: corrupt {what} (__metadata__ must map strings to strings)")
    data_len = size - 8 - n
    tensors: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for name, entry in header.items():
        where = f"{path}: corrupt or truncated {what} (tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{where}: expected dtype, shape and data_offsets)")
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        if dtype is None:
            raise CheckpointError(f"{where}: unsupported dtype {entry['dtype']!r})")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not (isinstance(shape, list) and len(shape) <= 8
                and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 40 for d in shape)):
            raise CheckpointError(f"{where}: bad shape {str(shape)[:60]})")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise CheckpointError(f"{where}: bad data_offsets {str(offsets)[:60]})")
        begin, end = offsets
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * dtype.itemsize
        if not (0 <= begin <= end <= data_len and end - begin == nbytes):
            raise CheckpointError(f"{where}: shape {tuple(shape)} of {dtype} needs {nbytes:,} bytes, the header "
                                  f"gives bytes {begin:,}..{end:,} of {data_len:,})")
        tensors[name] = (tuple(shape), dtype)
    return Header(meta, tensors)


def read_tensors(path: Path, what: str = "safetensors file") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file whose header was checked with :func:`read_header`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({e})") from None


def _load_safetensors(path: Path) -> tuple[dict, dict]:
    header = read_header(path)
    if "pcsr_config" not in header.metadata:
        raise CheckpointError(f"{path}: a safetensors file without a pcsr_config entry: not a pcsr checkpoint")
    config = parse_json(header.metadata["pcsr_config"], str(path), "pcsr_config")
    check_config(config, str(path), header.tensors)
    return config, read_tensors(path)


# --- the authors' format -------------------------------------------------------------

# Where each config field comes from in the authors' pcsr-phase1 files (for messages).
_OFFICIAL_FIELDS = {
    "backbone_args": "model.args.encoder_spec.args",
    "upsamplers[0]": "model.args.heavy_sampler_spec.args.imnet_spec.args.hidden_list",
    "upsamplers[1]": "model.args.light_sampler_spec.args.imnet_spec.args.hidden_list",
    "classifier": "model.args.classifier_spec.args.imnet_spec.args.hidden_list",
}


def _official_entry(field: str, kind: str) -> str:
    """The authors' entry behind a config field: ``upsamplers[0][2]`` ->
    ``model.args.heavy_sampler_spec.args.imnet_spec.args.hidden_list[2]``."""
    table = _OFFICIAL_FIELDS if kind == "pcsr" else {"backbone_args": "model.args"}
    for ours, theirs in table.items():
        if field.startswith(ours):
            return theirs + field[len(ours):]
    return field


def _entry(obj: Any, path: str, *keys: str, kind: type | tuple = dict) -> Any:
    """``obj[keys[0]][keys[1]]...`` of the authors' nested dicts, or a CheckpointError
    naming the entry that is missing or of the wrong type."""
    for key in keys:
        if not isinstance(obj, dict):
            raise CheckpointError(f"malformed authors' checkpoint: {path} should be a dict, got {type(obj).__name__}",
                                  field=path)
        if key not in obj:
            raise CheckpointError(f"malformed authors' checkpoint: {path} has no entry {key!r}", field=f"{path}.{key}")
        obj, path = obj[key], f"{path}.{key}"
    if not isinstance(obj, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CheckpointError(f"malformed authors' checkpoint: {path} should be a {names}, got {type(obj).__name__}",
                              field=path)
    return obj


def _backbone_args(args: dict, path: str, complete: bool) -> dict:
    flag = args.get("no_upsampling", not complete)
    if not isinstance(flag, bool):
        raise CheckpointError(f"malformed authors' checkpoint: {path}.no_upsampling should be a bool, got {flag!r}",
                              field=f"{path}.no_upsampling")
    if complete and flag:
        raise CheckpointError("a checkpoint of an original network without its upsampling tail is not a complete model",
                              field=f"{path}.no_upsampling")
    return {k: v for k, v in args.items() if k != "no_upsampling"}


def _official_state(sd: dict) -> dict[str, torch.Tensor]:
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor) or v.layout != torch.strided:
            raise CheckpointError(f"malformed authors' checkpoint: model.sd[{k!r}] should be a dense tensor, got "
                                  f"{type(v).__name__}", field=f"model.sd[{k!r}]")
    return sd


def official_to_config(model_spec: Any) -> tuple[dict, dict]:
    """The authors' ``{'name', 'args', 'sd'}`` -> (config, state_dict in this project's
    layout), both checked (schema, names, shapes) before anything is built."""
    name = _entry(model_spec, "model", "name", kind=str)
    args = _entry(model_spec, "model", "args")
    sd = _official_state(_entry(model_spec, "model", "sd"))
    if name == "pcsr-phase1":
        backbone = _entry(args, "model.args", "encoder_spec", "name", kind=str)
        bargs = _backbone_args(_entry(args, "model.args", "encoder_spec", "args"), "model.args.encoder_spec.args",
                               complete=False)
        hidden = [_entry(args, "model.args", spec, "args", "imnet_spec", "args", "hidden_list", kind=(list, tuple))
                  for spec in ("heavy_sampler_spec", "light_sampler_spec", "classifier_spec")]
        if backbone not in RGB_MEAN:
            raise CheckpointError(f"unsupported backbone {backbone!r} in the authors' checkpoint (expected "
                                  f"{', '.join(RGB_MEAN)})", field="model.args.encoder_spec.name")
        config = {"format": FORMAT, "version": VERSION, "kind": "pcsr", "backbone": backbone, "backbone_args": bargs,
                  "upsamplers": [list(hidden[0]), list(hidden[1])], "classifier": list(hidden[2]),
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
                raise CheckpointError(f"unexpected key {k!r} in a pcsr-phase1 checkpoint", field=f"model.sd[{k!r}]")
        _check_official(config, state)
        # Their classifier outputs (light, heavy); this project's branch order is (heavy, light).
        last = 2 * len(config["classifier"])  # nn.Sequential index of the classifier's last Linear
        for suffix in ("weight", "bias"):
            key = f"classifier.layers.{last}.{suffix}"
            state[key] = state[key].flip(0).contiguous()
        return config, state
    if name in ("fsrcnn", "carn", "srresnet"):
        bargs = _backbone_args(args, "model.args", complete=True)
        config = {"format": FORMAT, "version": VERSION, "kind": "original", "backbone": name, "backbone_args": bargs,
                  "rgb_mean": list(RGB_MEAN[name]), "rgb_std": [1.0, 1.0, 1.0]}
        state = {"net." + k: v for k, v in sd.items()}
        _check_official(config, state)
        return config, state
    raise CheckpointError(f"unsupported model {name!r} in the authors' checkpoint (expected pcsr-phase1, fsrcnn, carn, "
                          f"srresnet)", field="model.name")


def _check_official(config: dict, state: dict) -> None:
    found = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    try:
        schema.validate_config(config)
        schema.check_tensors(config, found)
    except ConfigError as e:
        where = _official_entry(e.field, config["kind"])
        raise CheckpointError(f"malformed authors' checkpoint ({where}): {e}", field=e.field) from None


def _load_torch(path: Path) -> tuple[dict, dict]:
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, truncated pickle, disallowed global, ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not (isinstance(ck, dict) and isinstance(ck.get("model"), dict)
            and {"name", "args", "sd"} <= set(ck["model"])):
        keys = sorted(map(str, ck))[:8] if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"{path}: not a PCSR checkpoint: expected {{'model': {{'name', 'args', 'sd'}}}}, found {keys}")
    try:
        return official_to_config(ck["model"])
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}", field=e.field) from None


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
    model = schema.build(config)  # checked above: the config, the parameter ceiling and every shape
    _load_state(model, state, str(path))
    model.checkpoint_info = {"path": str(path), **config.get("info", {})}
    return model.to(device).eval()
