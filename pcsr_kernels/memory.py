"""Memory guard of the ops: estimate from the shapes what a call will allocate, and refuse
with a ValueError (sizes and bytes in the message) when it cannot fit, before anything is
allocated -- instead of growing until the OOM killer ends the process.

The estimate of each op is its peak on the chosen backend: the outputs (``sr [B,3,H,W]``,
``classes [B,H,W]`` int64, ``probs [B,H,W,M]``) plus the largest intermediates alive at
the same time, as the backends are written (the reference's full-size probability and
score tensors and its refinement temporaries; the Triton kernels' fp32 buffers, LR
precompute and sorted indices; the CUDA kernels' unrefined copy and pixel order). Small
bounded buffers (per-thread scratch, per-band tiles of a few MB) are left out or bounded.

The limit: on CPU the memory the OS reports available (``psutil``, else
``/proc/meminfo``'s MemAvailable), capped by the room under a cgroup memory limit; on CUDA ``torch.cuda.mem_get_info``'s free memory plus
what the caching allocator holds unused. Estimates up to :data:`CHECK_ABOVE` bytes are
never checked, so the normal path costs a few integer products and no system call. The
check is skipped while a CUDA graph is being captured (querying the device is not allowed
then) and in the fake kernels (fake tensors allocate nothing).
"""
from __future__ import annotations

import os

import torch

from .reference import CHUNK_PIXELS

# Requests this small always go ahead: far below any machine's memory, and checking them
# would cost a system call per op call.
CHECK_ABOVE = 256 << 20

_I64 = 8


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB ({n} bytes)"


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation on ``device`` can use, or None when it cannot be known. On CPU
    the smaller of what the OS reports available and the room left under this process's
    cgroup (v2) memory limit, if it has one. (``pcsr.memory.available_memory`` is this too.)"""
    if device.type == "cpu":
        avail, room = _cpu_available(), _cgroup_room()
        if avail is None or room is None:
            return room if avail is None else avail
        return min(avail, room)
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return None
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free) + max(0, int(cached))
    return None


def _cpu_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit, if it has one."""
    try:
        with open("/proc/self/cgroup") as f:
            rel = next((ln.split(":", 2)[2].strip() for ln in f if ln.startswith("0::")), None)
        if rel is None:
            return None
        base = os.path.join("/sys/fs/cgroup", rel.lstrip("/"))
        with open(os.path.join(base, "memory.max")) as f:
            raw = f.read().strip()
        if raw == "max":
            return None
        with open(os.path.join(base, "memory.current")) as f:
            used = int(f.read().strip())
        return max(0, int(raw) - used)
    except (OSError, ValueError, StopIteration):
        return None


def check(op: str, what: str, need: int, device: torch.device) -> None:
    """Raise ValueError when ``need`` bytes cannot fit on ``device``. ``what`` names the
    arguments that set the size (e.g. ``out_size (H, W) = (40000, 40000), B = 1``)."""
    if need <= CHECK_ABOVE:
        return
    limit = available_bytes(device)
    if limit is not None and need > limit:
        raise ValueError(f"pcsr.{op}: {what} needs about {_gib(need)} of memory on {device} (outputs and "
                         f"intermediates), but only {_gib(limit)} are available; use a smaller out_size or "
                         "batch, or process the image in tiles")


# --- estimates, in bytes ---------------------------------------------------------------

def _pad64(n: int) -> int:
    return -(-n // 64) * 64


def _triton_p_cols(mlps: list[list[int]]) -> int:
    """Columns of the Triton LR precompute: each MLP's padded first width (an upper bound)."""
    return sum(_pad64(max(w[1:-1])) if len(w) > 2 else max(2, 1 << (w[-1] - 1).bit_length()) for w in mlps)


def _band_bytes(D: int, W: int, widest: int, e: int) -> int:
    """The reference's per-band temporaries: the gathered inputs and two activations."""
    rows = max(1, CHUNK_PIXELS // W)
    return rows * W * e * (3 * (D + 4) + 2 * widest)


def _adm_ref_bytes(HW: int, M: int, e: int) -> int:
    """adm_ref on one image: values, distances to the centres, labels, float64 copies."""
    return HW * (e + 2 * M * e + 3 * _I64 + 2)


def _refine_ref_bytes(N: int, e: int) -> int:
    """refine_ref besides its input: the clone, the 3x3 means, torch.where's result, masks."""
    return N * (9 * e + 2 * e + 2)


def route_upsample_bytes(backend: str, B: int, D: int, h: int, w: int, H: int, W: int,
                         widths: list[list[int]], e: int, adaptive: bool, refine: bool) -> int:
    """Peak bytes of route_upsample. widths: every MLP's widths [in, ..., out], classifier
    first, then the branches; e: feat's element size."""
    N, M = B * H * W, len(widths) - 1
    widest = max(max(wl) for wl in widths)
    out = N * (3 * e + _I64)  # sr, classes
    if backend == "reference":
        route = N * M * (3 * e + 1)  # probs, log(probs), score, isnan(score)
        if adaptive:
            route = N * M * e + N * e + _adm_ref_bytes(H * W, M, e)
        finish = _refine_ref_bytes(N, e) if refine else 0
        return out + max(route, finish, _band_bytes(D, W, widest, e))
    if backend == "cpu":
        tables = (H + W) * sum(_pad64(wl[1]) for wl in widths) * e
        return out + tables + (N * e + H * W * (e + 1) if adaptive else 0)
    if backend == "triton":
        P = B * h * w * _triton_p_cols(widths) * 4
        sr32 = N * 12
        idx = (N + M * 64) * (4 if N + M * 64 < 2**31 else 8)
        adm = N * 9 if adaptive else 0  # heavy mass, a masked copy, the finite mask
        conv = N * 3 * e if e != 4 else 0
        return P + N * _I64 + max(adm, sr32 + max(idx, sr32 if refine else 0) + conv) + B * h * w * 12
    if backend == "cuda":
        P = B * h * w * sum(wl[1] for wl in widths) * e
        return out + P + N * _I64 + (N * 3 * e if refine else 0) + (N * e if adaptive else 0)
    return out


def classify_bytes(backend: str, B: int, D: int, h: int, w: int, H: int, W: int, widths: list[int], e: int) -> int:
    N, M = B * H * W, widths[-1]
    out = N * M * e
    if backend == "reference":
        return out + _band_bytes(D, W, max(widths), e)
    if backend == "cpu":
        return out + (H + W) * _pad64(widths[1]) * e
    if backend == "triton":
        return out + (N * M * 4 if e != 4 else 0) + B * h * w * _triton_p_cols([widths]) * 4
    if backend == "cuda":
        return out + B * h * w * widths[1] * e
    return out


def route_bytes(backend: str, B: int, H: int, W: int, M: int, e: int, adaptive: bool, contiguous: bool) -> int:
    N = B * H * W
    out = N * _I64
    copy = 0 if contiguous else N * M * e
    if backend == "reference":
        return out + (N * e + _adm_ref_bytes(H * W, M, e) if adaptive else N * M * (2 * e + 1))
    if backend == "triton":
        copy = 0 if contiguous and e == 4 else N * M * 4
        return out + copy + (N * 9 if adaptive else 0)
    return out + copy + (N * e if adaptive else 0)


def upsample_bytes(backend: str, B: int, D: int, h: int, w: int, H: int, W: int,
                   widths: list[list[int]], e: int) -> int:
    N, M = B * H * W, len(widths)
    out = N * 3 * e
    if backend == "reference":
        return out + _band_bytes(D, W, max(max(wl) for wl in widths), e)
    if backend == "cpu":
        return out + (H + W) * sum(_pad64(wl[1]) for wl in widths) * e
    if backend == "triton":
        idx = (N + M * 64) * (4 if N + M * 64 < 2**31 else 8)
        return out + N * 12 + idx + B * h * w * _triton_p_cols(widths) * 4
    if backend == "cuda":
        return out + N * _I64 + B * h * w * sum(wl[1] for wl in widths) * e
    return out


def refine_bytes(backend: str, B: int, H: int, W: int, e: int) -> int:
    N = B * H * W
    if backend == "reference":
        return _refine_ref_bytes(N, e)
    if backend == "triton":
        return N * 24 + N * 3 * e
    return N * 3 * e
