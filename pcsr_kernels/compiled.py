"""The compiled extension's kernels as backends: the C++ kernels that ``pcsr_kernels._C``
registers on the dispatcher as the ``CPU`` / ``CUDA`` kernels of ``torch.ops.pcsr`` (see
``csrc/pcsr.cpp``). The backend choice (:mod:`pcsr_kernels.ops`, on the ``BackendSelect``
key) reaches them by redispatching the call to their dispatch key.
"""
from __future__ import annotations

import torch

from . import backend, extension_loaded
from .schemas import SCHEMAS


def has_kernels(dispatch_key: str) -> bool:
    """Whether the extension registered a kernel of every pcsr op for ``dispatch_key``."""
    return extension_loaded() and all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"pcsr::{name}", dispatch_key) for name in SCHEMAS)


def kernels(dispatch_key: str) -> dict:
    """Op name -> a function calling that op's kernel for ``dispatch_key`` (``"CPU"``, ``"CUDA"``)."""
    keys = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, dispatch_key))

    def kernel(name):
        op = getattr(torch.ops.pcsr, name).default

        def call(*args):
            return op.redispatch(keys, *args)

        call.__name__ = call.__qualname__ = f"{name}_{dispatch_key.lower()}"
        return call

    return {name: kernel(name) for name in SCHEMAS}


def register(name: str, dispatch_key: str) -> None:
    """Register backend ``name`` (``"cpu"``, ``"cuda"``): the kernels for ``dispatch_key``, for
    tensors of that device only; nothing when the extension has none."""
    device = dispatch_key.lower()

    def available(device_type: str) -> tuple[bool, str]:
        if device_type != device:
            return False, f"the {name} backend runs {dispatch_key} tensors only, got {device_type} tensors"
        return True, ""

    if has_kernels(dispatch_key):
        backend.register(name, kernels(dispatch_key), available)
