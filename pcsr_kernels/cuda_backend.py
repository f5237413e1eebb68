"""The ``cuda`` backend: the CUDA C++ kernels of ``csrc/cuda`` (``torch.ops.pcsr_cuda.*``),
selected with ``PCSR_BACKEND=cuda`` or ``pcsr_kernels.set_backend("cuda")``.

They are compiled into ``pcsr_kernels._C`` when torch has CUDA and a CUDA toolkit is found
at build time; otherwise this backend is not registered and
``backend.availability("cuda", ...)`` says why. CUDA tensors only; float32 and float64.
"""
from __future__ import annotations

import torch

from . import backend, extension_loaded
from .schemas import SCHEMAS


def _has_ops() -> bool:
    if not extension_loaded():
        return False
    ns = torch.ops.pcsr_cuda
    return all(hasattr(ns, name) for name in SCHEMAS)


def _available(device_type: str) -> tuple[bool, str]:
    if device_type != "cuda":
        return False, f"the cuda backend runs CUDA tensors only, got {device_type} tensors"
    return True, ""


if _has_ops():
    backend.register("cuda", {name: getattr(torch.ops.pcsr_cuda, name).default for name in SCHEMAS}, _available)
