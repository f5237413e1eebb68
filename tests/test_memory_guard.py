"""The ops' memory guard (pcsr_kernels.memory): a call whose outputs and intermediates cannot
fit is refused with a ValueError naming the sizes, the bytes needed and the limit -- before
anything is allocated -- and a call that fits is not affected."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pcsr_kernels
from conftest import random_problem
from pcsr_kernels import memory

HUGE = (40000, 40000)
TESTS = Path(__file__).resolve().parent


def _backends():
    out = []
    for name in ("reference", "cpu", "triton"):
        ok, why = pcsr_kernels.backend.availability(name, "cpu")
        out.append(pytest.param(name, id=name, marks=pytest.mark.skipif(not ok, reason=why)))
    return out


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _huge_request(op: str, p: dict, B: int):
    """A call of `op` with a 40000 x 40000 output, built from zero-stride views where the op
    takes a full-size tensor, so that the test itself allocates nothing."""
    M = len(p["depths"])
    H, W = HUGE
    if op == "route_upsample":
        return lambda: pcsr_kernels.route_upsample(**dict(p, out_size=HUGE))
    if op == "classify":
        return lambda: pcsr_kernels.classify(p["feat"], HUGE, p["classifier"])
    if op == "route":
        probs = torch.full((1, 1, 1, M), 1.0 / M).expand(B, H, W, M)
        return lambda: pcsr_kernels.route(probs, p["cost"])
    classes = torch.zeros(1, 1, 1, dtype=torch.int64).expand(B, H, W)
    if op == "upsample":
        return lambda: pcsr_kernels.upsample(p["feat"], p["lr"], classes, p["upsamplers"], p["depths"])
    sr = torch.zeros(1, 3, 1, 1).expand(B, 3, H, W)
    return lambda: pcsr_kernels.refine(sr, classes, M)


@pytest.mark.parametrize("name", _backends())
@pytest.mark.parametrize("op", ["route_upsample", "classify", "route", "upsample", "refine"])
def test_a_huge_output_is_refused_before_allocating(op, name):
    if memory.available_bytes(torch.device("cpu")) is None:
        pytest.skip("this OS does not say how much memory is available")
    # enough images that the int64 class map alone exceeds what is available (one on a
    # machine with less than 12.8 GB free)
    B = 1 + memory.available_bytes(torch.device("cpu")) // (HUGE[0] * HUGE[1] * 8)
    p = random_problem(B, 6, 2, 3, 8, 12, [[10], [10]], [], seed=1)
    call = _huge_request(op, p, B)
    before = _peak_rss()
    with pcsr_kernels.use_backend(name), pytest.raises(ValueError) as err:
        call()
    msg = str(err.value)
    assert f"pcsr.{op}:" in msg and "40000" in msg and "bytes) of memory on cpu" in msg and "are available" in msg
    need, limit = [int(s.split(" bytes")[0]) for s in msg.split("GiB (")[1:3]]
    assert need > limit > 0
    assert need >= B * HUGE[0] * HUGE[1] * 8  # at least the smallest output
    assert _peak_rss() - before < 1 << 30  # refused before any output was allocated


@pytest.mark.parametrize("name", _backends())
def test_a_normal_call_is_not_affected(name, monkeypatch):
    """Below CHECK_ABOVE the guard does not even ask the OS; above it, a call that fits runs."""
    p = random_problem(2, 6, 3, 4, 9, 13, [[10, 10], [8]], [6], seed=2)
    want = pcsr_kernels.reference.route_upsample_ref(**p)
    monkeypatch.setattr(memory, "available_bytes", lambda device: pytest.fail("queried for a small call"))
    with pcsr_kernels.use_backend(name):
        sr, cls = pcsr_kernels.route_upsample(**p)
    assert torch.equal(cls, want[1])
    torch.testing.assert_close(sr, want[0], rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(memory, "CHECK_ABOVE", 0)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 40)
    with pcsr_kernels.use_backend(name):
        sr2, cls2 = pcsr_kernels.route_upsample(**p)
    assert torch.equal(sr2, sr) and torch.equal(cls2, cls)


def test_the_limit_comes_from_the_machine(monkeypatch):
    """The same request passes or fails with the memory the machine reports."""
    p = random_problem(1, 6, 2, 3, 8, 12, [[10], [10]], [], seed=3)
    monkeypatch.setattr(memory, "CHECK_ABOVE", 0)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    with pcsr_kernels.use_backend("reference"):  # the guard runs before any backend
        with pytest.raises(ValueError, match=r"out_size \(H, W\) = \(80, 120\) with B = 1, M = 2 needs about "
                                             r".* but only 0.0 GiB \(1000 bytes\) are available"):
            pcsr_kernels.route_upsample(**dict(p, out_size=(80, 120)))
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)  # unknown: no refusal
    with pcsr_kernels.use_backend("reference"):
        sr, _ = pcsr_kernels.route_upsample(**dict(p, out_size=(80, 120)))
    assert sr.shape == (1, 3, 80, 120)


def test_fake_kernels_skip_the_guard():
    """Shapes only: meta tensors of a huge output allocate nothing and are not refused."""
    p = random_problem(1, 6, 2, 3, 8, 12, [[10], [10]], [], seed=4)
    m = {k: ([t.to("meta") for t in v] if isinstance(v, list) and v and isinstance(v[0], torch.Tensor)
             else v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in p.items()}
    sr, cls = torch.ops.pcsr.route_upsample(m["feat"], m["lr"], list(HUGE), m["classifier"], m["upsamplers"],
                                            m["depths"], m["cost"])
    assert sr.shape == (1, 3, *HUGE) and cls.shape == (1, *HUGE) and sr.device.type == "meta"


_PEAK_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import pcsr_kernels
from conftest import random_problem
from pcsr_kernels import memory

def status(key):  # kB -> bytes
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))

name, H, W, adaptive = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
torch.set_num_threads(1)
p = random_problem(1, 8, H // 4, W // 4, H, W, [[16, 16], [8], [8]], [8], seed=5)
widths = [[12, 8, 3], [12, 16, 16, 3], [12, 8, 3], [12, 8, 3]]
est = memory.route_upsample_bytes(name, 1, 8, H // 4, W // 4, H, W, widths, 4, adaptive, True)
with pcsr_kernels.use_backend(name):
    pcsr_kernels.route_upsample(**dict(p, out_size=(16, 16)), adaptive=adaptive)  # warm up: code, pools
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    base = status("VmRSS")
    pcsr_kernels.route_upsample(**p, adaptive=adaptive)
print(json.dumps(dict(est=est, peak=status("VmHWM") - base)))
"""


@pytest.mark.parametrize("name,adaptive", [("reference", False), ("reference", True), ("cpu", False), ("cpu", True)])
def test_estimate_covers_the_measured_peak(name, adaptive):
    """In a fresh process, the peak resident memory of one call at 1200 x 800 above what
    was resident before it stays within the estimate, and the estimate is not far above it
    (a guard that refused calls that fit would be as wrong as none)."""
    ok, why = pcsr_kernels.backend.availability(name, "cpu")
    if not ok:
        pytest.skip(why)
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    # Tensors above 1 MB straight from mmap, so that the resident size follows the live
    # tensors instead of what glibc's heap keeps after a free (its default threshold grows
    # to 32 MB, above this test's tensors, and then the peak depends on fragmentation).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    r = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(TESTS), name, "1200", "800", str(int(adaptive))],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["peak"] <= m["est"] * 1.1, m
    assert m["est"] <= 3 * max(m["peak"], 1600 * 1200 * 20), m
