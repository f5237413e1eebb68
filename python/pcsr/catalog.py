"""``pcsr models``: the bundled models, one line each, described from the metadata their
safetensors files carry (config and training notes); no weights are loaded."""
from __future__ import annotations

import json
import math
import re

from . import cli


def bundled_info() -> list[dict]:
    """Name, variant, training scale, parameter count and training data of every bundled model."""
    from safetensors import safe_open

    from .checkpoint import bundled_models

    out = []
    for name, path in bundled_models().items():
        with safe_open(str(path), framework="pt") as f:
            config = json.loads((f.metadata() or {}).get("pcsr_config", "{}"))
            params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        info = config.get("info", {})
        title = info.get("name", "")
        scale = re.search(r"\bx(\d+(?:\.\d+)?)\b", title)
        variant = re.sub(r"\s*\bx\d+(?:\.\d+)?\b", "", title).strip()
        if not variant:
            backbone = str(config.get("backbone", "?"))
            variant = backbone.upper() + ("-PCSR" if config.get("kind") == "pcsr" else "")
        out.append({"name": name, "variant": variant, "scale": f"x{scale.group(1)}" if scale else "?",
                    "params": params, "branches": len(config.get("upsamplers", [])),
                    "data": info.get("data", "not recorded"), "default": name == cli.DEFAULT_MODEL})
    return out


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def cmd_models(args) -> int:
    rows = bundled_info()
    if not rows:
        print("no bundled models (the package's weights folder is empty)")
        return 0
    width = max(len(r["name"]) + (10 if r["default"] else 0) for r in rows)
    for r in rows:
        name = r["name"] + (" (default)" if r["default"] else "")
        print(f"{name:<{width}}  {r['variant']}, trained {r['scale']}, {_count(r['params'])} parameters, "
              f"{r['branches']} branches; data: {r['data']}")
    return 0


def add_arguments(p) -> None:
    p.set_defaults(func=cmd_models)
