"""Launch parameters of the Triton backend, and the interpreter switch. Imports no Triton,
so the backend can read them before any kernel module is imported.

The upsamplers' precision lives in :mod:`pcsr_kernels.precision` (re-exported here); the
kernels take it as an argument of the op.
"""
from __future__ import annotations

import os

from ..precision import PRECISIONS, get_precision, set_precision  # noqa: F401


# The fused-MLP kernels (classify, upsample): BM pixels per block, one pipeline stage.
# Warps by output-tile width BN, from the sm_90 build with Triton 3.6's ptxas (offline;
# no GPU has timed these choices): the 192-wide layer loop at BN = 64 takes 240 registers
# and no spill with 8 warps (255 and a spill with 4); BN = 16 takes 96 with 4 warps.
MLP_BLOCK_M = 64
MLP_NUM_STAGES = 1


def mlp_num_warps(bn: int) -> int:
    return 8 if bn >= 32 else 4


# The register-chunked kernels (dense pass, branch kernels): BM pixels per block. Chosen
# from the offline sm_90 build (compile_check.py; registers and spills at the variants'
# widths), not yet timed on a GPU.
DENSE_BLOCK_M = 128
DENSE_NUM_WARPS = 4


def dense_num_warps(light_hp: int, prec: str) -> int:
    """Warps of the dense pass: 4, or 8 for a light branch over 32 wide (48 wide,
    SRResNet-PCSR: with 4 warps the sm_90 build spilled 172 B in tf32x3 with Triton 3.6,
    8 B in ieee and 24 B in bf16 with Triton 3.9)."""
    return 8 if light_hp > 32 else DENSE_NUM_WARPS


BRANCH_BLOCK_M = 128


def branch_launch(hp: int, prec: str, scratch: bool) -> tuple[int, int]:
    """(BM, num_warps) of a branch kernel of padded hidden width hp, from the offline sm_90
    build (Triton 3.6, ptxas -v; not timed). Register chunks: at 192 wide bf16 builds
    without a spill at BM = 64 with 8 warps (228 B spilled at BM = 128); at 80 wide tf32
    at BM = 64 with 4 warps (68 B at 128 x 8), bf16 at BM = 128 with 8; up to 64 wide every
    mode at BM = 128 with 8 warps (a 16-wide ieee branch spilled 8 B with 4). The scratch
    loop (see :func:`.branch.uses_scratch`) keeps the fused-MLP parameters of
    :data:`MLP_BLOCK_M`."""
    if scratch:
        return MLP_BLOCK_M, 8
    if hp > 64:
        return (64, 4) if prec == "tf32" else (64 if hp > 128 else BRANCH_BLOCK_M, 8)
    return BRANCH_BLOCK_M, 8


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
