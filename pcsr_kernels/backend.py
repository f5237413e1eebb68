"""Which implementation runs behind ``torch.ops.pcsr.*``.

Backends: ``reference`` (pure PyTorch, any device), ``cpu`` (C++ kernels, CPU tensors),
``triton`` (Triton kernels: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``),
``cuda`` (CUDA C++ kernels, CUDA tensors).

The choice comes from :func:`set_backend` if called, else from the environment variable
``PCSR_BACKEND``, else ``auto``: the fastest backend that is available for the tensors'
device. An explicitly chosen backend that is unknown or unavailable is an error, never a
silent fallback. Backends register themselves with :func:`register`.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable

NAMES = ("reference", "cpu", "triton", "cuda")
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("triton", "cuda", "reference")}

_impls: dict[str, dict[str, Callable]] = {}
_available: dict[str, Callable[[str], tuple[bool, str]]] = {}
_override: str | None = None
_warned_fallback = False


def register(name: str, impls: dict[str, Callable], available: Callable[[str], tuple[bool, str]]) -> None:
    """Register a backend: ``impls`` maps each op name to its function;
    ``available(device_type) -> (ok, why_not)``."""
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(NAMES)}")
    _impls[name] = impls
    _available[name] = available


def _check_name(name: str) -> str:
    name = name.strip().lower()
    if name not in NAMES + ("auto",):
        raise ValueError(f"unknown pcsr backend {name!r}; choose one of: auto, {', '.join(NAMES)}")
    return name


def set_backend(name: str | None) -> None:
    """Choose the backend for every following call (``None`` or ``'auto'``: automatic)."""
    global _override
    _override = None if name is None else _check_name(name)


def get_backend() -> str:
    """The backend as configured (``'auto'`` unless set or given by ``PCSR_BACKEND``)."""
    if _override is not None:
        return _override
    env = os.environ.get("PCSR_BACKEND", "").strip()
    if env:
        try:
            return _check_name(env)
        except ValueError as e:
            raise ValueError(f"PCSR_BACKEND: {e}") from None
    return "auto"


@contextlib.contextmanager
def use_backend(name: str | None):
    """Context manager form of :func:`set_backend`."""
    global _override
    old = _override
    set_backend(name)
    try:
        yield
    finally:
        _override = old


def availability(name: str, device_type: str) -> tuple[bool, str]:
    if name not in _impls:
        return False, _missing_reason(name)
    return _available[name](device_type)


def _missing_reason(name: str) -> str:
    if name in ("cpu", "cuda"):
        from . import extension_error

        return (f"the compiled pcsr extension has no {name} kernels ({extension_error() or 'not built'}); "
                "build it with `pip install --no-build-isolation -e .`")
    if name == "triton":
        return "the Triton backend could not be imported (is triton installed?)"
    return "not registered"


def resolved_name(device_type: str) -> str:
    """The name of the backend that runs ops on ``device_type`` tensors."""
    global _warned_fallback
    name = get_backend()
    if name == "auto":
        for cand in _AUTO_ORDER.get(device_type, ("reference",)):
            ok, _ = availability(cand, device_type)
            if ok:
                if cand == "reference" and device_type in ("cpu", "cuda") and not _warned_fallback:
                    _warned_fallback = True
                    fast = _AUTO_ORDER[device_type][0]
                    warnings.warn(
                        f"pcsr: no fast backend for {device_type} tensors ({availability(fast, device_type)[1]}); "
                        "using the pure-PyTorch reference", RuntimeWarning, stacklevel=3)
                return cand
        raise RuntimeError(f"pcsr: no backend available for {device_type} tensors")
    ok, why = availability(name, device_type)
    if not ok:
        raise RuntimeError(f"pcsr backend {name!r} is not available for {device_type} tensors: {why}")
    return name


def impls(name: str) -> dict[str, Callable]:
    """The implementations (op name -> function) of a registered backend."""
    return _impls[name]


def resolve(device_type: str) -> dict[str, Callable]:
    """The implementations (op name -> function) to use for tensors on ``device_type``."""
    return _impls[resolved_name(device_type)]
