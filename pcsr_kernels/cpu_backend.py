"""The ``cpu`` backend: the C++ kernels of ``csrc/cpu`` (``torch.ops.pcsr_cpu.*``).

They are compiled into ``pcsr_kernels._C``; when the extension is missing or was built
without them, this backend is simply not registered and ``backend.availability("cpu", ...)``
says how to build it. CPU tensors only; float32 and float64 (other dtypes raise a
``TypeError`` that names the dtype -- the reference backend handles them).
"""
from __future__ import annotations

import torch

from . import backend, extension_loaded
from .schemas import SCHEMAS


def _has_ops() -> bool:
    if not extension_loaded():
        return False
    ns = torch.ops.pcsr_cpu
    return all(hasattr(ns, name) for name in SCHEMAS)


def _available(device_type: str) -> tuple[bool, str]:
    if device_type != "cpu":
        return False, f"the cpu backend runs CPU tensors only, got {device_type} tensors"
    return True, ""


if _has_ops():
    backend.register("cpu", {name: getattr(torch.ops.pcsr_cpu, name).default for name in SCHEMAS}, _available)
