"""The operator schemas of ``torch.ops.pcsr``, read from ``schemas.def`` beside this file.

That file is the one place the schemas are written: the compiled extension includes it
(``csrc/schemas.h``) and defines the ops in C++ (``TORCH_LIBRARY(pcsr, m)``); when the
extension is not built, :mod:`pcsr_kernels.ops` defines them from here.
"""
from __future__ import annotations

import re
from pathlib import Path

_LINE = re.compile(r'^PCSR_SCHEMA\("(?P<schema>[^"]+)"\)\s*$')


def _read(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = _LINE.match(line.strip())
        if m:
            schema = m["schema"]
            out[schema.split("(", 1)[0]] = schema
    return out


SCHEMAS = _read(Path(__file__).with_name("schemas.def"))
