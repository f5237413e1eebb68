"""Dot precision and launch parameters of the Triton backend. Imports no Triton, so the
backend can read and set them before any kernel module is imported.

Precision (``tl.dot``'s ``input_precision``):

* ``"ieee"`` (default): fp32 IEEE dots (FMA on NVIDIA GPUs); matches the reference to
  rounding.
* ``"tf32x3"`` (opt-in): three TF32 tensor-core products per dot, error close to fp32.
* ``"tf32"`` (opt-in): one TF32 product, ~1e-3 relative error.

Choose with ``PCSR_TRITON_PRECISION`` or :func:`set_precision`. The error of the opt-in
modes against fp32 is bounded in ``tests/test_triton.py``; Triton's interpreter computes
every dot in fp32 whatever the setting, so only a GPU measures it.
"""
from __future__ import annotations

import os

PRECISIONS = ("ieee", "tf32x3", "tf32")
_precision: str | None = None


def _check(name: str) -> str:
    name = name.strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"Triton dot precision must be one of {PRECISIONS}, got {name!r}")
    return name


def set_precision(name: str | None) -> None:
    """``"ieee"``, ``"tf32x3"``, ``"tf32"``, or ``None`` to follow ``PCSR_TRITON_PRECISION`` again."""
    global _precision
    _precision = None if name is None else _check(name)


def get_precision() -> str:
    if _precision is not None:
        return _precision
    env = os.environ.get("PCSR_TRITON_PRECISION", "").strip()
    if not env:
        return "ieee"
    try:
        return _check(env)
    except ValueError as e:
        raise ValueError(f"PCSR_TRITON_PRECISION: {e}") from None


# The fused-MLP kernels (classify, upsample): BM pixels per block, one pipeline stage.
# Warps by output-tile width BN, from the sm_90 build with Triton 3.6's ptxas (offline;
# no GPU has timed these choices): the 192-wide layer loop at BN = 64 takes 240 registers
# and no spill with 8 warps (255 and a spill with 4); BN = 16 takes 96 with 4 warps.
MLP_BLOCK_M = 64
MLP_NUM_STAGES = 1


def mlp_num_warps(bn: int) -> int:
    return 8 if bn >= 32 else 4


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# The device the kernels run on decides block sizes: the interpreter runs one program
# after another in numpy, so there the cost is per program and per op, not per lane.
_SM_COUNT: dict[int, int] = {}


def persistent_programs(device, blocks_upper_bound: int, per_sm: int = 4) -> int:
    """Programs of a grid-stride ("persistent") launch: enough to fill the GPU, never
    more than the blocks there can be; a couple under the interpreter."""
    if device.type != "cuda" or interpreting():
        return max(1, min(blocks_upper_bound, 2))
    import torch

    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return max(1, min(blocks_upper_bound, _SM_COUNT[idx] * per_sm))
