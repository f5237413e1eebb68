"""Shared test settings: devices, tolerances, the shared data folder, random weights."""
from __future__ import annotations

import os

# Triton kernels run on CPU tensors through Triton's interpreter when there is no GPU.
# It must be set before any Triton kernel module is imported.
# (Checked by the device node, not torch.cuda, so that importing torch stays after it.)
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# PCSR_OFFICIAL_DIR: a copy of the authors' files (a GPU session carries one into the call)
OFFICIAL = Path(os.environ["PCSR_OFFICIAL_DIR"]).resolve() if os.environ.get("PCSR_OFFICIAL_DIR") else (
    SHARED / "reference" / "official-pcsr")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def official_file(name: str) -> Path:
    """A file of the authors' release, or skip the test when it is not on this machine."""
    p = OFFICIAL / name
    if not p.exists():
        pytest.skip(f"{p} not present (the authors' files live outside the repository)")
    return p


def random_mlp(widths, generator=None, dtype=torch.float32, device="cpu", scale=1.0):
    """Flat [W0, b0, W1, b1, ...] with nn.Linear-like init, so activations stay O(1)."""
    out = []
    for i, o in zip(widths[:-1], widths[1:]):
        W = torch.randn(o, i, generator=generator, dtype=torch.float64) * (scale / i ** 0.5)
        b = torch.randn(o, generator=generator, dtype=torch.float64) * 0.1
        out += [W.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device)]
    return out


def random_problem(B, D, h, w, H, W, hidden, cls_hidden, seed=0, dtype=torch.float32, device="cpu"):
    """Random inputs of route_upsample: hidden = per-branch hidden-width lists (branch 0 first)."""
    g = torch.Generator().manual_seed(seed)
    M = len(hidden)
    feat = torch.randn(B, D, h, w, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    lr = torch.rand(B, 3, h, w, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    classifier = random_mlp([D + 4, *cls_hidden, M], g, dtype, device, scale=2.0)
    ups, depths = [], []
    for hid in hidden:
        ups += random_mlp([D + 4, *hid, 3], g, dtype, device)
        depths.append(len(hid) + 1)
    cost = torch.rand(M, generator=g, dtype=torch.float64) + 0.1
    cost = (cost / cost.sum()).sort(descending=True).values.to(dtype=dtype, device=device)
    return dict(feat=feat, lr=lr, out_size=(H, W), classifier=classifier, upsamplers=ups,
                depths=depths, cost=cost)
