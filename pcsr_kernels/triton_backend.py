"""The ``triton`` backend: registers the Triton kernels behind ``torch.ops.pcsr``.

Available for CUDA tensors when Triton imports and a GPU is present, and for CPU tensors
only through Triton's interpreter (``TRITON_INTERPRET=1``), which is how the kernels are
tested on machines without a GPU. The kernel modules (``pcsr_kernels.triton.*``) are
imported on the first call, not here: ``@triton.jit`` reads ``TRITON_INTERPRET`` when a
kernel is decorated, so the flag may be set any time before that first call.

Precision: the ops' ``precision`` argument (``pcsr_kernels.precision``): ``"ieee"`` fp32
dots (default), or opt-in ``"tf32x3"`` / ``"tf32"`` / ``"bf16"`` tensor cores for the
upsampler MLPs; the classifier is always fp32 IEEE.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
from typing import Callable

from . import backend
from .precision import get_precision, set_precision  # noqa: F401  (imports no Triton)

_OPS = {
    "route_upsample": ("route_upsample", "route_upsample_triton"),
    "classify": ("classify", "classify_triton"),
    "route": ("route", "route_triton"),
    "upsample": ("upsample", "upsample_triton"),
    "refine": ("refine", "refine_triton"),
}

_import_error: str | None = None
_checked = False
_loaded_interpreting: bool | None = None  # TRITON_INTERPRET when the kernels were decorated


def _triton_error() -> str | None:
    """Why Triton cannot be used (None when it can); imports it once."""
    global _checked, _import_error
    if not _checked:
        _checked = True
        if importlib.util.find_spec("triton") is None:
            _import_error = "triton is not installed (pip install triton)"
        else:
            try:
                import triton  # noqa: F401
                import triton.language  # noqa: F401
            except Exception as e:  # a broken install must not break `import pcsr_kernels`
                _import_error = f"triton failed to import: {type(e).__name__}: {e}"
    return _import_error


def available(device_type: str) -> tuple[bool, str]:
    err = _triton_error()
    if err:
        return False, err
    from .triton.config import interpreting

    interp = interpreting()
    if _loaded_interpreting is not None and _loaded_interpreting != interp:
        return False, (f"the Triton kernels were loaded with TRITON_INTERPRET={int(_loaded_interpreting)} "
                       f"but it is now {int(interp)}; set it before the first Triton call")
    if device_type == "cuda":
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA device is available"
        return True, ""
    if device_type == "cpu":
        if interp:
            return True, ""
        return False, ("Triton kernels run on CPU tensors only through Triton's interpreter: "
                       "set TRITON_INTERPRET=1 before the first Triton call (slow; meant for tests)")
    return False, f"the Triton backend has no kernels for {device_type} tensors"


def _device_of(args):
    import torch

    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    return None


def _lazy(module: str, fn: str) -> Callable:
    impl = None

    def call(*args):
        nonlocal impl
        global _loaded_interpreting
        if impl is None:
            from .triton.config import interpreting

            if _loaded_interpreting is None:
                _loaded_interpreting = interpreting()
            impl = getattr(importlib.import_module(f"{__package__}.triton.{module}"), fn)
        dev = _device_of(args)
        if dev is not None and dev.type == "cuda":
            import torch

            guard = torch.cuda.device(dev)  # Triton launches on the current device's stream
        else:
            guard = contextlib.nullcontext()
        with guard:
            return impl(*args)

    call.__name__ = fn
    call.__qualname__ = fn
    return call


backend.register("triton", {op: _lazy(mod, fn) for op, (mod, fn) in _OPS.items()}, available)
