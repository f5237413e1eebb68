"""The model config's schema: what a checkpoint may ask the loader to build.

A checkpoint's JSON config decides how large every module the loader builds is, so a
hostile or corrupt config could make the loader allocate gigabytes before a single weight
is compared. The loader therefore checks, before it allocates anything:

1. the config itself (:func:`validate_config`): types, allowed keys and ranges of every
   field; a failure is a :class:`ConfigError` naming the field (``upsamplers[0][2]``,
   ``backbone_args.nf``, ``rgb_mean``);
2. the model it describes, built on the ``meta`` device (shapes without storage,
   :func:`expected_tensors`): its parameter count against :data:`MAX_PARAMS`, then every
   tensor named in the file (name, shape, dtype, from the file's header) against the
   model's (:func:`check_tensors`).

Only then is the real model built and the weights read.

Ranges are generous bounds on what the three backbones and the ops can use, not the
paper's values: MLP widths up to 4096, 32 hidden layers, 16 branches, 1024 channels,
128 blocks. Together they could still describe a model of billions of parameters, which
is what the parameter ceiling is for.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

FORMAT = "pcsr"
VERSION = 1

# The largest model of this project is MSRResNet x4 (1.5M parameters; SRResNet-PCSR has
# 1.08M). 50M parameters are 200 MB in fp32: far above any model here, small enough to
# allocate on any machine that runs PCSR.
MAX_PARAMS = 50_000_000
MAX_BRANCHES = 16
MAX_HIDDEN_LAYERS = 32
MAX_WIDTH = 4096
MAX_CHANNELS = 1024
MAX_BLOCKS = 128
MAX_SCALE = 16

KINDS = ("pcsr", "original")
# Backbone -> {argument: (low, high)}; "scale"/"upscale" are the same argument (the
# authors' FSRCNN and MSRResNet spell it "upscale").
BACKBONE_ARGS: dict[str, dict[str, tuple[int, int]]] = {
    "fsrcnn": {"d": (1, MAX_CHANNELS), "s": (1, MAX_CHANNELS), "m": (0, MAX_BLOCKS)},
    "carn": {"nf": (1, MAX_CHANNELS), "group": (1, MAX_CHANNELS)},
    "srresnet": {"nf": (1, MAX_CHANNELS), "nb": (0, MAX_BLOCKS)},
}
# The scales whose upsampling tail each original network can build (backbones.py).
ORIGINAL_SCALES = {"fsrcnn": tuple(range(2, 11)), "carn": (2, 3, 4, 8), "srresnet": (2, 3, 4)}
TOP_KEYS = {"pcsr": {"format", "version", "kind", "backbone", "backbone_args", "upsamplers", "classifier",
                     "rgb_mean", "rgb_std", "info"},
            "original": {"format", "version", "kind", "backbone", "backbone_args", "rgb_mean", "rgb_std", "info"}}


class ConfigError(ValueError):
    """A config that fails the schema; ``field`` is the offending field's path."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"config field {field}: {reason}")
        self.field = field
        self.reason = reason


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _int(value: Any, field: str, low: int, high: int) -> int:
    # bool is an int subclass; true/false in JSON is never a size.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"expected an integer in {low}..{high}, got {type(value).__name__} {_show(value)}")
    if not low <= value <= high:
        raise ConfigError(field, f"expected an integer in {low}..{high}, got {_show(value)}")
    return value


def _widths(value: Any, field: str, max_len: int) -> list[int]:
    if not isinstance(value, list):
        raise ConfigError(field, f"expected a list of hidden widths, got {type(value).__name__} {_show(value)}")
    if len(value) > max_len:
        raise ConfigError(field, f"at most {max_len} hidden layers, got {len(value)}")
    return [_int(v, f"{field}[{i}]", 1, MAX_WIDTH) for i, v in enumerate(value)]


def _rgb(value: Any, field: str, positive: bool) -> list[float]:
    if not isinstance(value, list) or len(value) != 3:
        got = f"length {len(value)}" if isinstance(value, list) else type(value).__name__
        raise ConfigError(field, f"expected a list of 3 numbers (R, G, B), got {got} {_show(value)}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{field}[{i}]", f"expected a finite number, got {_show(v)}")
        if positive and not v > 0:
            raise ConfigError(f"{field}[{i}]", f"expected a number > 0, got {_show(v)}")
        if abs(v) > 1e6:  # images are in [0, 1]; a mean or std of a million is corrupt
            raise ConfigError(f"{field}[{i}]", f"expected a magnitude of at most 1e6, got {_show(v)}")
    return [float(v) for v in value]


def _backbone_args(value: Any, backbone: str, kind: str) -> dict:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError("backbone_args", f"expected an object of arguments, got {type(value).__name__} "
                                           f"{_show(value)}")
    allowed = BACKBONE_ARGS[backbone]
    for key, v in value.items():
        field = f"backbone_args.{key}"
        if key in ("scale", "upscale"):
            _int(v, field, 1, MAX_SCALE)
        elif key in allowed:
            _int(v, field, *allowed[key])
        else:
            names = ", ".join([*allowed, "scale"])
            raise ConfigError(field, f"unknown argument of the {backbone} backbone (expected some of {names})")
    if "scale" in value and "upscale" in value and value["scale"] != value["upscale"]:
        raise ConfigError("backbone_args.upscale", f"disagrees with backbone_args.scale ({value['upscale']} != "
                                                   f"{value['scale']})")
    if backbone == "carn":
        nf, group = value.get("nf", 64), value.get("group", 4)
        if nf % group:
            raise ConfigError("backbone_args.group", f"CARN needs nf ({nf}) divisible by group ({group})")
    if kind == "original":
        scale = value.get("scale", value.get("upscale", 4))
        if scale not in ORIGINAL_SCALES[backbone]:
            field = "backbone_args.scale" if "scale" in value else "backbone_args.upscale"
            raise ConfigError(field, f"the {backbone} upsampling tail supports scales "
                                     f"{', '.join(map(str, ORIGINAL_SCALES[backbone]))}, got {scale}")
    return value


def validate_config(config: Any) -> dict:
    """Check a model config against the schema; returns it unchanged, or raises
    :class:`ConfigError` naming the first field that fails."""
    if not isinstance(config, dict):
        raise ConfigError("config", f"expected a JSON object, got {type(config).__name__} {_show(config)}")
    if not isinstance(config.get("format"), str) or config["format"] != FORMAT:
        raise ConfigError("format", f"expected {FORMAT!r}, got {_show(config.get('format'))}")
    if "version" not in config:
        raise ConfigError("version", "missing")
    version = config["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError("version", f"expected a positive integer, got {type(version).__name__} {_show(version)}")
    if version > VERSION:
        raise ConfigError("version", f"written by a newer pcsr (format version {config['version']} > {VERSION})")
    kind = config.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError("kind", f"expected one of {', '.join(map(repr, KINDS))}, got {_show(kind)}")
    unknown = sorted(str(k) for k in set(config) - TOP_KEYS[kind])
    if unknown:
        raise ConfigError(unknown[0], f"not a field of a {kind!r} config (fields: {', '.join(sorted(TOP_KEYS[kind]))})")
    backbone = config.get("backbone")
    if not isinstance(backbone, str) or backbone not in BACKBONE_ARGS:
        raise ConfigError("backbone", f"expected one of {', '.join(map(repr, BACKBONE_ARGS))}, got {_show(backbone)}")
    _backbone_args(config.get("backbone_args"), backbone, kind)
    if kind == "pcsr":
        ups = config.get("upsamplers")
        if not isinstance(ups, list):
            raise ConfigError("upsamplers", f"expected a list of branches (hidden widths each), got "
                                            f"{type(ups).__name__} {_show(ups)}")
        if not 2 <= len(ups) <= MAX_BRANCHES:
            raise ConfigError("upsamplers", f"expected 2..{MAX_BRANCHES} branches, got {len(ups)}")
        for j, u in enumerate(ups):
            _widths(u, f"upsamplers[{j}]", MAX_HIDDEN_LAYERS)
        if "classifier" not in config:
            raise ConfigError("classifier", "missing")
        _widths(config["classifier"], "classifier", MAX_HIDDEN_LAYERS)
    for name, positive in (("rgb_mean", False), ("rgb_std", True)):
        if name in config:
            _rgb(config[name], name, positive)
    if "info" in config and not isinstance(config["info"], dict):
        raise ConfigError("info", f"expected an object, got {type(config['info']).__name__} {_show(config['info'])}")
    return config


def build(config: dict, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model a *validated* config describes; ``device='meta'`` builds shapes only."""
    from .model import PCSR, SRModel

    mean, std = config.get("rgb_mean", (0.0, 0.0, 0.0)), config.get("rgb_std", (1.0, 1.0, 1.0))
    with torch.device(device):
        if config["kind"] == "pcsr":
            return PCSR(config["backbone"], config.get("backbone_args"), config["upsamplers"], config["classifier"],
                        mean, std)
        return SRModel(config["backbone"], config.get("backbone_args"), mean, std)


def field_of(name: str, config: Mapping) -> str:
    """The config field that decides the shape of the state-dict entry ``name``."""
    parts = name.split(".")
    if parts[0] == "upsamplers" and len(parts) > 1 and parts[1].isdigit():
        return f"upsamplers[{parts[1]}]"
    if parts[0] == "classifier":
        return "classifier"
    return "backbone_args"


def expected_tensors(config: dict) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every state-dict entry of the model ``config`` describes,
    from a copy built on the meta device (no storage), after checking its parameter count
    against :data:`MAX_PARAMS`."""
    meta = build(config, "meta")
    sizes: dict[str, int] = {}
    for name, p in meta.state_dict().items():
        sizes[field_of(name, config)] = sizes.get(field_of(name, config), 0) + p.numel()
    total = sum(sizes.values())
    if total > MAX_PARAMS:
        worst = max(sizes, key=sizes.get)
        raise ConfigError(worst, f"the config describes {total:,} parameters ({sizes[worst]:,} from {worst}), above "
                                 f"the ceiling of {MAX_PARAMS:,}")
    return {name: (tuple(t.shape), t.dtype) for name, t in meta.state_dict().items()}


def check_tensors(config: dict, found: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
    """Compare the tensors a file holds (name -> (shape, dtype), from its header) with the
    model ``config`` describes; raises :class:`ConfigError` naming the responsible field."""
    want = expected_tensors(config)
    missing = sorted(set(want) - set(found))
    extra = sorted(set(found) - set(want))
    if missing or extra:
        name = (missing or extra)[0]
        field = field_of(name, config)
        what = []
        if missing:
            what.append(f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}")
        if extra:
            what.append(f"unexpected {extra[:4]}{'...' if len(extra) > 4 else ''}")
        raise ConfigError(field, f"the weights do not fit the model the config describes ({field} = "
                                 f"{_show(_field_value(config, field))}): {', '.join(what)}")
    for name, (shape, dtype) in want.items():
        got_shape, got_dtype = found[name]
        if tuple(got_shape) != shape:
            field = field_of(name, config)
            raise ConfigError(field, f"{name} has shape {tuple(got_shape)} in the file, the config ({field} = "
                                     f"{_show(_field_value(config, field))}) implies {shape}")
        if got_dtype.is_floating_point != dtype.is_floating_point or got_dtype.is_complex or got_dtype == torch.bool:
            raise ConfigError(field_of(name, config), f"{name} has dtype {got_dtype}, expected {dtype}")


def _field_value(config: Mapping, field: str) -> Any:
    if field.startswith("upsamplers["):
        return config["upsamplers"][int(field[len("upsamplers["):-1])]
    return config.get(field)
