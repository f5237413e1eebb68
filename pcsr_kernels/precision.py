"""The arithmetic of the upsampler MLPs on the GPU backends: one setting for the package.

``route_upsample`` and ``upsample`` take ``precision=None | "ieee" | "tf32x3" | "tf32" |
"bf16"``; ``None`` (the default of the op schemas) means the setting made here:
:func:`set_precision` if called, else the environment variable ``PCSR_PRECISION``, else
``"ieee"``.

* ``"ieee"``: fp32 products and sums, the reference's arithmetic (to rounding).
* ``"tf32x3"``: three TF32 tensor-core products per dot (error ~1e-6 relative).
* ``"tf32"``: one TF32 product (10 mantissa bits, ~1e-3 relative).
* ``"bf16"``: bf16 activations, weights and LR precompute, fp32 accumulation (~1e-2).

It is a speed/accuracy knob of the ``triton`` backend only. The classifier always runs in
fp32 IEEE whatever the setting, so that class decisions stay the reference's except at true
ties. The ``reference``, ``cpu`` and ``cuda`` backends validate the argument and compute
exactly (their own dtype) whatever it says.

Default: ``"ieee"`` until the modes are timed on a GPU (``scripts/gpu_checks.sh`` measures
each); the rule that will choose it is "the most accurate mode within 2x of the fastest".

``PCSR_TRITON_PRECISION``, the variable of earlier versions, is still read when
``PCSR_PRECISION`` is not set; both set to different values is an error.

This module imports no Triton.
"""
from __future__ import annotations

import contextlib
import os

PRECISIONS = ("ieee", "tf32x3", "tf32", "bf16")
DEFAULT = "ieee"
_ENV, _OLD_ENV = "PCSR_PRECISION", "PCSR_TRITON_PRECISION"
_override: str | None = None


def check(name, what: str = "precision") -> str:
    """A valid precision name (case and spaces ignored), or ValueError naming the argument."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, one of {', '.join(PRECISIONS)}; got {type(name).__name__}")
    key = name.strip().lower()
    if key not in PRECISIONS:
        raise ValueError(f"{what} must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return key


def set_precision(name: str | None) -> None:
    """Choose the upsamplers' precision for every following call; ``None``: back to
    ``PCSR_PRECISION`` (or the default)."""
    global _override
    _override = None if name is None else check(name)


def _from_env() -> str | None:
    new = os.environ.get(_ENV, "").strip()
    old = os.environ.get(_OLD_ENV, "").strip()
    if new and old and check(new, _ENV) != check(old, _OLD_ENV):
        raise ValueError(f"{_ENV}={new!r} and {_OLD_ENV}={old!r} disagree; {_OLD_ENV} is the old name of "
                         f"{_ENV}: unset it")
    if new:
        return check(new, _ENV)
    if old:
        return check(old, _OLD_ENV)
    return None


def get_precision() -> str:
    """The configured precision: :func:`set_precision`, else ``PCSR_PRECISION``, else ``"ieee"``."""
    if _override is not None:
        return _override
    return _from_env() or DEFAULT


def resolve(precision: str | None) -> str:
    """An op's ``precision`` argument: a checked name, or the configured one for ``None``."""
    return get_precision() if precision is None else check(precision)


@contextlib.contextmanager
def use_precision(name: str | None):
    """Context manager form of :func:`set_precision`."""
    global _override
    old = _override
    set_precision(name)
    try:
        yield
    finally:
        _override = old
