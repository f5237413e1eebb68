"""The backend choice by device and dtype (``pcsr_kernels.backend.SUPPORT``), the README's
rendering of that table, and the fake kernels' memory format against the real ones."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import pcsr_kernels as pk
from backend_matrix import params as backend_params
from conftest import REPO, random_problem
from pcsr_kernels import backend

OPS = ("route_upsample", "classify", "route", "upsample", "refine")


@pytest.fixture
def gpu_machine(monkeypatch):
    """Pretend that CUDA tensors can run on ``triton`` and ``cuda`` (as on a GPU machine);
    returns a function that makes one of them unavailable. Only the choice is exercised:
    nothing runs."""
    avail = {"triton": True, "cuda": True}

    def fake(name):
        def available(device_type):
            if device_type == "cuda":
                return (True, "") if avail[name] else (False, f"{name} not built (test)")
            return False, f"{name}: not for {device_type} tensors (test)"
        return available

    for name in ("triton", "cuda"):
        monkeypatch.setitem(backend._impls, name, {})
        monkeypatch.setitem(backend._available, name, fake(name))
    monkeypatch.setattr(backend, "_warned_fallback", True)  # the missing-build warning is tested elsewhere
    monkeypatch.delenv("PCSR_BACKEND", raising=False)
    backend.set_backend(None)

    def drop(name):
        avail[name] = False
    return drop


@pytest.mark.parametrize("op", OPS)
def test_cuda_float32_goes_to_triton(gpu_machine, op):
    assert backend.resolved_name("cuda", torch.float32, op) == "triton"
    assert backend.resolved_name("cuda", torch.bfloat16, op) == "triton"


@pytest.mark.parametrize("op", OPS)
def test_cuda_float64_never_goes_to_triton(gpu_machine, op):
    """Triton refuses float64: the choice is the faster of the CUDA C++ kernels and the
    reference for that op (the table in backend.py: the reference for the MLP ops)."""
    want = "reference" if op in ("upsample", "route_upsample") else "cuda"
    assert backend.resolved_name("cuda", torch.float64, op) == want
    gpu_machine("cuda")
    assert backend.resolved_name("cuda", torch.float64, op) == "reference"


@pytest.mark.parametrize("op", OPS)
def test_cuda_without_triton_prefers_the_faster(gpu_machine, op):
    gpu_machine("triton")
    want = "reference" if op in ("upsample", "route_upsample") else "cuda"
    assert backend.resolved_name("cuda", torch.float32, op) == want
    # the CUDA C++ kernels compute float32/float64 only
    assert backend.resolved_name("cuda", torch.float16, op) == "reference"


def test_explicit_choice_that_cannot_run_the_dtype_is_an_error(gpu_machine):
    with pk.use_backend("triton"):
        with pytest.raises(TypeError, match=r"'triton' does not run cuda tensors of dtype torch.float64.*"
                                            r"float32 on cuda; reference and cuda can"):
            backend.resolved_name("cuda", torch.float64, "upsample")
    with pk.use_backend("cuda"):
        with pytest.raises(TypeError, match=r"'cuda' does not run cuda tensors of dtype torch.float16"):
            backend.resolved_name("cuda", torch.float16, "classify")
        assert backend.resolved_name("cuda", torch.float64, "upsample") == "cuda"  # explicit stays explicit


def test_float16_cpu_tensors_go_to_the_reference():
    backend.set_backend(None)
    for dtype in (torch.float16, torch.bfloat16):
        assert backend.resolved_name("cpu", dtype, "route_upsample") == "reference"
    if backend.availability("cpu", "cpu")[0]:
        assert backend.resolved_name("cpu", torch.float32, "route_upsample") == "cpu"
        assert backend.resolved_name("cpu", torch.float64, "route_upsample") == "cpu"


def test_float16_cpu_call_runs_on_the_reference_and_explicit_cpu_refuses(monkeypatch):
    monkeypatch.delenv("PCSR_BACKEND", raising=False)
    backend.set_backend(None)
    p = random_problem(1, 4, 5, 3, 11, 7, [[6], []], [5], dtype=torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the table's choice, not a missing build: no warning
        sr, classes = pk.route_upsample(**p)
    with pk.use_backend("reference"):
        ref_sr, ref_classes = pk.route_upsample(**p)
    assert sr.dtype == torch.float16
    assert torch.equal(sr, ref_sr) and torch.equal(classes, ref_classes)
    if not backend.availability("cpu", "cpu")[0]:
        pytest.skip("no cpu backend in this build")
    with pk.use_backend("cpu"), pytest.raises(TypeError, match=r"'cpu' does not run cpu tensors of dtype "
                                                                r"torch.float16 \(torch's name: Half\)"):
        pk.route_upsample(**p)


def test_what_no_backend_runs_is_refused_clearly():
    backend.set_backend(None)
    dtype = torch.float8_e4m3fn
    with pytest.raises(TypeError, match=r"no backend runs cpu tensors of dtype torch.float8_e4m3fn; tried "
                                        r"cpu: .*; reference: computes float16, bfloat16, float32, float64"):
        backend.resolved_name("cpu", dtype, "classify")


def test_readme_shows_the_support_table():
    readme = (REPO / "README.md").read_text()
    assert backend.support_markdown() in readme


# --- fake kernels: the same memory format as the real ones ---------------------------------

def _inputs(device):
    p = random_problem(2, 5, 5, 4, 13, 9, [[8], []], [6], device=device)
    cl = torch.channels_last
    p["feat"] = p["feat"].to(memory_format=cl)
    p["lr"] = p["lr"].to(memory_format=cl)
    with pk.use_backend("reference"):
        p["probs"] = pk.classify(p["feat"], p["out_size"], p["classifier"])
        p["classes"] = pk.route(p["probs"], p["cost"])
    p["sr"] = torch.randn(2, 3, 13, 9, device=device).to(memory_format=cl)
    p["probs_t"] = p["probs"].transpose(1, 2).contiguous().transpose(1, 2)  # [B, H, W, M], non-contiguous
    return p


_CALLS = {
    "route_upsample": lambda q: torch.ops.pcsr.route_upsample(q["feat"], q["lr"], list(q["out_size"]), q["classifier"],
                                                              q["upsamplers"], q["depths"], q["cost"]),
    "classify": lambda q: torch.ops.pcsr.classify(q["feat"], list(q["out_size"]), q["classifier"]),
    "route": lambda q: torch.ops.pcsr.route(q["probs_t"], q["cost"]),
    "upsample": lambda q: torch.ops.pcsr.upsample(q["feat"], q["lr"], q["classes"], q["upsamplers"], q["depths"]),
    "refine": lambda q: torch.ops.pcsr.refine(q["sr"], q["classes"], 2),
}


@pytest.mark.parametrize("name,device", [pytest.param("reference", "cpu", id="reference-cpu")] + backend_params())
def test_fake_kernels_return_the_real_memory_format(name, device):
    """channels_last feat/lr/sr (and a non-contiguous probs): each op's fake output has the
    strides of the backend's real output."""
    p = _inputs(device)
    mode = FakeTensorMode()

    def fake(v):
        if torch.is_tensor(v):
            return mode.from_tensor(v)
        if isinstance(v, list) and v and torch.is_tensor(v[0]):
            return [mode.from_tensor(t) for t in v]
        return v

    fp = {k: fake(v) for k, v in p.items()}
    with pk.use_backend(name):
        for op, call in _CALLS.items():
            real = call(p)
            with mode:
                faked = call(fp)
            real = real if isinstance(real, tuple) else (real,)
            faked = faked if isinstance(faked, tuple) else (faked,)
            for r, f in zip(real, faked):
                assert r.shape == f.shape and r.dtype == f.dtype, op
                assert r.stride() == f.stride(), f"{op}: real strides {r.stride()}, fake {f.stride()}"
                for fmt in (torch.contiguous_format, torch.channels_last):
                    if r.dim() == 4:
                        assert r.is_contiguous(memory_format=fmt) == f.is_contiguous(memory_format=fmt), (op, fmt)
