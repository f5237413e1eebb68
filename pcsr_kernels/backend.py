"""Which implementation runs behind ``torch.ops.pcsr.*``.

Backends: ``reference`` (pure PyTorch, any device), ``cpu`` (C++ kernels, CPU tensors),
``triton`` (Triton kernels: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``),
``cuda`` (CUDA C++ kernels, CUDA tensors).

The choice comes from :func:`set_backend` if called, else from the environment variable
``PCSR_BACKEND``, else ``auto``: the first backend of :func:`auto_order` that is available
for the tensors' device and computes their dtype (:data:`SUPPORT`). An explicitly chosen
backend that is unknown, unavailable, or does not compute the tensors' dtype is an error,
never a silent fallback. Backends register themselves with :func:`register`.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable

NAMES = ("reference", "cpu", "triton", "cuda")

# The support table: backend -> device type ("*": any) -> the dtypes it computes. The
# README's table is rendered from it (support_markdown; tests/test_backend_choice.py
# checks that they agree). Triton computes in fp32 and takes fp16/bf16 inputs, and
# refuses float64 (it would lose precision silently); the C++ kernels are instantiated
# for float and double only. Triton serves CPU tensors only through its interpreter
# (TRITON_INTERPRET=1, for tests): availability() says so.
SUPPORT: dict[str, dict[str, tuple[str, ...]]] = {
    "reference": {"*": ("float16", "bfloat16", "float32", "float64")},
    "cpu": {"cpu": ("float32", "float64")},
    "triton": {"cuda": ("float16", "bfloat16", "float32"), "cpu": ("float16", "bfloat16", "float32")},
    "cuda": {"cuda": ("float32", "float64")},
}

# The automatic choice, fastest first (benchmarks/RESULTS.md). On CPU the C++ kernels are
# 6-9x faster than the reference for the upsampling stage. On CUDA Triton is fastest for
# every op. Without Triton (or for float64) the CUDA C++ kernels and the reference trade
# places by op: on an H100 the CUDA C++ per-branch MLP kernel took 131 ms against the
# reference's 27 ms for SRResNet-PCSR's upsample at 2K (and 19 against 30 ms for
# CARN-PCSR's narrower MLPs), so for the two ops that run the upsampler MLPs
# (upsample, route_upsample) the reference goes first: its worst case is 1.5x slower
# than the C++ kernel, the C++ kernel's is 4.9x slower than the reference. For classify
# (1.5 vs 11 ms), ADM routing (1.3 vs 46 ms) and refine (0.3 vs 0.8 ms) the CUDA C++
# kernels are faster and go first.
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("triton", "cuda", "reference")}
_AUTO_ORDER_OP = {("cuda", "upsample"): ("triton", "reference", "cuda"),
                  ("cuda", "route_upsample"): ("triton", "reference", "cuda")}

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


def _dtype_name(dtype) -> str | None:
    """``torch.float32`` -> ``"float32"``; None for None and for non-floating dtypes (those
    are bad input, which the ops' argument checks report by argument name)."""
    if dtype is None or not getattr(dtype, "is_floating_point", False):
        return None
    return str(dtype).removeprefix("torch.")


def dtypes(name: str, device_type: str) -> tuple[str, ...]:
    """The dtypes (names) that backend ``name`` computes for ``device_type`` tensors."""
    table = SUPPORT[name]
    return table.get(device_type, table.get("*", ()))


def supports(name: str, device_type: str, dtype) -> bool:
    """Whether backend ``name`` computes ``dtype`` tensors on ``device_type`` by the table
    (:func:`availability` says whether it is built and usable here). ``dtype=None``: any."""
    have = dtypes(name, device_type)
    d = _dtype_name(dtype)
    return bool(have) and (d is None or d in have)


def auto_order(device_type: str, op: str | None = None) -> tuple[str, ...]:
    """The backends the automatic choice tries for ``op`` on ``device_type``, fastest first."""
    return _AUTO_ORDER_OP.get((device_type, op), _AUTO_ORDER.get(device_type, ("reference",)))


def _why_not(name: str, device_type: str, dtype) -> str | None:
    ok, why = availability(name, device_type)
    if not ok:
        return why
    if not supports(name, device_type, dtype):
        return f"computes {', '.join(dtypes(name, device_type)) or 'nothing'} on {device_type}"
    return None


def resolved_name(device_type: str, dtype=None, op: str | None = None) -> str:
    """The name of the backend that runs ``op`` on ``device_type`` tensors of ``dtype``
    (``None``: any dtype, any op). An explicit choice is that backend or an error:
    RuntimeError when it is unavailable for the device, TypeError when it does not compute
    the dtype."""
    global _warned_fallback
    name = get_backend()
    d = _dtype_name(dtype)
    what = f"{device_type} tensors" if d is None else f"{device_type} tensors of dtype {dtype}"
    if name == "auto":
        order = auto_order(device_type, op)
        tried = []
        for cand in order:
            why = _why_not(cand, device_type, dtype)
            if why is None:
                if (cand == "reference" and device_type in ("cpu", "cuda") and not _warned_fallback
                        and not availability(order[0], device_type)[0]):
                    # A fast backend missing from the build is worth one warning; a dtype
                    # that only the reference computes is the table's documented choice.
                    _warned_fallback = True
                    warnings.warn(
                        f"pcsr: no fast backend for {device_type} tensors ({availability(order[0], device_type)[1]}); "
                        "using the pure-PyTorch reference", RuntimeWarning, stacklevel=3)
                return cand
            tried.append(f"{cand}: {why}")
        # Some backend runs this device, so it is the dtype that nobody computes.
        exc = TypeError if any(availability(c, device_type)[0] for c in order) else RuntimeError
        raise exc(f"pcsr: no backend runs {what}; tried {'; '.join(tried)}")
    ok, why = availability(name, device_type)
    if not ok:
        raise RuntimeError(f"pcsr backend {name!r} is not available for {device_type} tensors: {why}")
    if not supports(name, device_type, dtype):
        others = [c for c in NAMES if c != name and supports(c, device_type, dtype) and availability(c, device_type)[0]]
        raise TypeError(f"pcsr backend {name!r} does not run {what} (torch's name: {_c10_name(dtype)}); it computes "
                        f"{', '.join(dtypes(name, device_type)) or 'nothing'} on {device_type}"
                        + (f"; {' and '.join(others)} can" if others else ""))
    return name


def _c10_name(dtype) -> str:
    # The name C++ error messages use (Half, BFloat16, Float, Double), for users who grep for it.
    return {"float16": "Half", "bfloat16": "BFloat16", "float32": "Float", "float64": "Double"}.get(
        _dtype_name(dtype) or "", str(dtype))


def support_markdown() -> str:
    """The support table as Markdown (the README shows it; a test keeps them equal)."""
    cols = ("float32", "float64", "float16", "bfloat16")
    rows = ["| backend | device | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name in NAMES:
        for dev, have in SUPPORT[name].items():
            where = {"*": "any", "cpu": "CPU", "cuda": "CUDA"}[dev]
            if name == "triton" and dev == "cpu":
                where = "CPU (interpreter, `TRITON_INTERPRET=1`: tests)"
            rows.append(f"| {name} | {where} | " + " | ".join("yes" if c in have else "-" for c in cols) + " |")
    return "\n".join(rows)

def impls(name: str) -> dict[str, Callable]:
    """The implementations (op name -> function) of a registered backend."""
    return _impls[name]


def resolve(device_type: str) -> dict[str, Callable]:
    """The implementations (op name -> function) to use for tensors on ``device_type``."""
    return _impls[resolved_name(device_type)]
