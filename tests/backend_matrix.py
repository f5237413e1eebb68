"""The (backend, device) pairs a kernel test runs on: every compiled or Triton backend that
this machine can run, each on its device (Triton on CPU tensors through its interpreter,
which conftest switches on when there is no GPU). The reference is what they are held to."""
from __future__ import annotations

import pytest

from pcsr_kernels import backend

PAIRS = [("cpu", "cpu"), ("triton", "cpu"), ("triton", "cuda"), ("cuda", "cuda")]


def params():
    """pytest params ``(backend_name, device)``, skipped where unavailable (with the reason)."""
    out = []
    for name, dev in PAIRS:
        ok, why = backend.availability(name, dev)
        out.append(pytest.param(name, dev, id=f"{name}-{dev}",
                                marks=pytest.mark.skipif(not ok, reason=f"{name} on {dev}: {why}")))
    return out


def supports_float64(name: str) -> bool:
    """The Triton kernels compute in fp32 and refuse float64 inputs."""
    return name != "triton"
