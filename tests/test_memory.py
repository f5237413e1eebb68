"""Memory estimates against measured peaks, budgets, and the guards built on them.

Peaks are the resident-set high-water mark (VmHWM) of a fresh Python process, reset just
before the measured call through /proc/self/clear_refs, minus the resident set at that
moment: what the call added, as the operating system saw it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pcsr
from pcsr import memory

REPO = Path(__file__).resolve().parents[1]

# Runs in a subprocess: one model, several measurements, each peak reset before its call.
_PROBE = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
import pcsr, pcsr_kernels
from pcsr import memory, tiling
from pcsr.model import PCSR

assert memory.return_freed_memory(), "not glibc"

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, val = line.split(":", 1)
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0]) * 1024
    return out

name = sys.argv[1]
if name == "srresnet":
    torch.manual_seed(0)
    model = PCSR("srresnet", {"nf": 58, "nb": 16}, [[170] * 4, [40] * 3], [20, 20]).eval()
else:
    model = pcsr.load(name)
results = []
with torch.no_grad():
    for spec in json.loads(sys.argv[3]):
        pcsr_kernels.set_backend(spec.get("backend", "auto"))
        kw = spec.get("kw", {})
        small = torch.rand(1, 3, 12, 12)
        model(small, scale=4, **kw)  # load libraries and kernels before measuring
        tiling.upscale(model, small, 4, tile=5, **kw)
        h, w = spec["size"]
        lr = torch.rand(1, 3, h, w)
        open("/proc/self/clear_refs", "w").write("5")
        before = status()["VmRSS"]
        if spec["what"] == "backbone":
            out = model._inference_backbone()(model.normalise(lr))
            est = (memory.backbone_footprint(model, torch.float32).act_bytes + 12) * h * w + memory.BACKBONE_SLACK
        elif spec["what"] == "forward":
            out = model(lr, scale=4, **kw)
            est = memory.forward_estimate(model, lr.shape, 4 * h, 4 * w, torch.float32, lr.device, **kw).total
        else:
            whole = tiling.plan(model, lr.shape, 4, max_memory=1 << 50, **kw).estimate.total
            budget = spec["max_memory"] = int(spec["fraction"] * whole)
            plan = tiling.plan(model, lr.shape, 4, max_memory=budget, **kw)
            out = tiling.upscale(model, lr, 4, max_memory=budget, **kw)
            est = plan.estimate.total
            spec["tiles"] = plan.tiles
        spec.update(peak=status()["VmHWM"] - before, estimate=int(est))
        del out
        results.append(spec)
print(json.dumps(results))
"""


def _measure(model: str, specs: list, threads: int = 1) -> list:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("/proc/self/clear_refs is not writable here: peaks cannot be reset")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "python")]))
    run = subprocess.run([sys.executable, "-c", _PROBE, model, str(threads), json.dumps(specs)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _check(results, slack_ratio=2.0):
    for r in results:
        label = f"{r['what']} {r.get('backend', 'auto')} {r.get('kw', {})} {r['size']}"
        assert r["peak"] <= r["estimate"], f"{label}: measured {r['peak']} > estimate {r['estimate']}"
        # informative, not a blanket: the estimate is within a factor of the truth
        assert r["estimate"] <= slack_ratio * r["peak"] + 32e6, \
            f"{label}: estimate {r['estimate']} far above measured {r['peak']}"


def test_fsrcnn_estimates_bound_measured_peaks():
    """Backbone, whole-image forward on the cpu backend (k and ADM) and the reference, and
    tiles under a budget that binds: each measured peak within its estimate, each tiled
    run within its budget. One thread keeps the run time predictable on a shared CPU;
    the conv workspace rule covers two (see pcsr.footprint)."""
    results = _measure("fsrcnn", [
        {"what": "backbone", "size": [300, 300]},
        {"what": "forward", "size": [200, 240], "backend": "cpu"},
        {"what": "forward", "size": [200, 240], "backend": "cpu", "kw": {"adaptive": True}},
        {"what": "forward", "size": [150, 200], "backend": "reference"},
        {"what": "tiled", "size": [240, 320], "fraction": 0.6},
    ])
    _check(results)
    tiled = results[-1]
    assert tiled["tiles"] > 1 and tiled["peak"] <= tiled["max_memory"]


def test_carn_and_srresnet_estimates_bound_measured_peaks():
    results = _measure("carn", [
        {"what": "backbone", "size": [200, 200]},
        {"what": "forward", "size": [120, 160], "backend": "cpu"},
        {"what": "tiled", "size": [150, 200], "fraction": 0.8, "kw": {"adaptive": True}},
    ])
    results += _measure("srresnet", [{"what": "backbone", "size": [160, 160]}])
    _check(results)
    tiled = results[2]
    assert tiled["tiles"] > 1 and tiled["peak"] <= tiled["max_memory"]


def test_available_memory_and_default_budget():
    avail = memory.available_memory("cpu")
    with open("/proc/meminfo") as f:
        total = int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024
    assert 0 < avail <= total
    assert memory.default_budget("cpu") <= memory.DEFAULT_FRACTION * memory.available_memory("cpu") * 1.1
    with pytest.raises(ValueError, match="no memory estimate for meta tensors"):
        memory.available_memory("meta")


def test_op_model_names_what_it_does_not_know():
    hd = memory.heads_of(pcsr.load("fsrcnn"))
    with pytest.raises(ValueError, match="no memory model for backend 'npu'"):
        memory.op_bytes("route_upsample", "npu", hd, 1, 8, 8, 32, 32, 4)
    with pytest.raises(ValueError, match="unknown op 'sort'"):
        memory.op_bytes("sort", "cpu", hd, 1, 8, 8, 32, 32, 4)


@pytest.mark.parametrize("backend", ["cpu", "reference", "triton", "cuda"])
def test_op_estimates_grow_with_the_output_and_cover_the_outputs(backend):
    hd = memory.heads_of(pcsr.load("carn"))
    small = memory.op_bytes("route_upsample", backend, hd, 1, 100, 100, 400, 400, 4)
    big = memory.op_bytes("route_upsample", backend, hd, 1, 100, 100, 800, 800, 4)
    assert big - small >= 3 * 400 * 400 * (4 + 8)  # at least sr and int64 classes of the extra pixels
    adm = memory.op_bytes("route_upsample", backend, hd, 1, 100, 100, 800, 800, 4, adaptive=True)
    assert adm >= big


def test_format_bytes_gives_units_and_the_exact_count():
    assert memory.format_bytes(1_590_000_000) == "1.59 GB (1590000000 bytes)"
    assert memory.format_bytes(512) == "512 bytes"


def test_estimate_string_lists_its_parts_largest_first():
    est = memory.Estimate(3_000_000, {"a": 1_000_000, "b": 2_000_000})
    assert str(est) == "3.00 MB (3000000 bytes) (b 2.00 MB (2000000 bytes), a 1.00 MB (1000000 bytes))"


def test_whole_image_estimate_counts_features_and_backbone():
    m = pcsr.load("carn")
    est = memory.forward_estimate(m, (1, 3, 100, 100), 400, 400, torch.float32, torch.device("cpu"))
    fp = memory.backbone_footprint(m, torch.float32)
    assert est.parts["backbone activations"] == pytest.approx(fp.act_bytes * 1e4 + memory.BACKBONE_SLACK, rel=1e-6)
    assert est.parts["features"] == 52 * 4 * 1e4
    assert est.total >= est.parts["features"] + est.parts["upsampling (outputs included)"]


def test_one_reading_of_the_available_memory(monkeypatch):
    """The tiler's budget and the ops' guard read the same number: the OS's available
    memory capped by the room under a cgroup limit."""
    import pcsr_kernels.memory as kernel_memory

    cpu = torch.device("cpu")
    monkeypatch.setattr(kernel_memory, "_cpu_available", lambda: 8 << 30)
    monkeypatch.setattr(kernel_memory, "_cgroup_room", lambda: 3 << 30)
    assert kernel_memory.available_bytes(cpu) == memory.available_memory("cpu") == 3 << 30
    monkeypatch.setattr(kernel_memory, "_cgroup_room", lambda: None)
    assert kernel_memory.available_bytes(cpu) == memory.available_memory("cpu") == 8 << 30
