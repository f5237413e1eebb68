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


# The register-chunked kernels (dense pass, branch kernels): BM pixels per block and warps,
# chosen from the offline sm_90 builds with Triton 3.6 (the GPU image's) and 3.9
# (compile_check.py: registers and spills at the variants' widths, every precision), so
# that neither spills; not yet timed on a GPU. Several of these builds sit within a few
# registers of the 255 limit or of ptxas's occupancy steps (128, 64), where a small code
# change tips ptxas into spilling a few bytes: rerun compile_check after any kernel change.
DENSE_BLOCK_M = 128
DENSE_NUM_WARPS = 4


def dense_launch(light_hp: int, prec: str) -> tuple[int, int]:
    """(BM, num_warps) of the dense pass; ``light_hp``: the padded width of the light
    branch it runs (0 for the heavy-mass mode, which runs the classifier only). A light
    branch over 32 wide (48, SRResNet-PCSR) takes 8 warps (with 4: 172 B spilled in tf32x3
    with Triton 3.6, 8-24 B in ieee and bf16 with 3.9), and in ieee and tf32x3, whose dot
    operands are fp32 (and split in two for tf32x3), 64 pixels per block: at 128 the ieee
    build sits at 255 registers and spilled 16 B with Triton 3.9 once the padded units
    were zeroed, tf32x3 reaches 252."""
    if light_hp > 32:
        return (64, 8) if prec in ("ieee", "tf32x3") else (DENSE_BLOCK_M, 8)
    return DENSE_BLOCK_M, DENSE_NUM_WARPS


BRANCH_BLOCK_M = 128


def branch_launch(hp: int, prec: str, scratch: bool) -> tuple[int, int]:
    """(BM, num_warps) of a branch kernel of padded hidden width hp (see above for how
    chosen). Register chunks: at 192 wide bf16 builds without a spill at BM = 64 with 8
    warps (228 B spilled at BM = 128); at 80 wide tf32 at BM = 64 with 4 warps (68 B at 128
    x 8), bf16 at BM = 128 with 8; up to 64 wide every mode at BM = 128 with 8 warps, except
    ieee under 64 wide (16, 32, 48: FSRCNN-, CARN-, SRResNet-PCSR's light branches), which
    Triton 3.9 built at 128 registers with an 8 B spill or at 254: BM = 64 there. The
    scratch loop (see :func:`.branch.uses_scratch`): BM = 128 up to 128 wide (at 80 wide, BM
    = 64 spilled 28 B with Triton 3.9), the fused-MLP kernels' :data:`MLP_BLOCK_M` above
    (192 wide: 44-124 B spilled at BM = 128)."""
    if scratch:
        return (BRANCH_BLOCK_M if hp <= 128 else MLP_BLOCK_M), 8
    if hp > 64:
        return (64, 4) if prec == "tf32" else (64 if hp > 128 else BRANCH_BLOCK_M, 8)
    if prec == "ieee" and hp < 64:
        return 64, 8
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
