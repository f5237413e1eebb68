"""The CUDA C++ kernels (``csrc/cuda``): every ``*_kernel.cu`` compiles with this machine's
nvcc for sm_80 and sm_90 -- they include only CUDA headers and ``csrc/common``, so this
runs even where torch has no CUDA and no GPU is present, and a syntax or type error in CUDA
code cannot land; the torch glue (register_cuda.cpp) passes the C++ compiler's checks -- and, where a GPU and a CUDA build of the extension are present, the
``cuda`` backend passes the case matrix of the CPU kernels on CUDA tensors."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from kernel_cases import (CASES, CLASSIFY_CASES, REFINE_CASES, check_classify, check_refine, check_route,
                          check_route_adaptive_shapes, check_route_upsample, check_upsample, skip_unless)

REPO = Path(__file__).resolve().parents[1]
KERNELS = sorted((REPO / "csrc" / "cuda").glob("*_kernel.cu"))


def _nvcc() -> str | None:
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    return None


def test_kernel_files_exist():
    names = {p.name for p in KERNELS}
    assert {"classify_kernel.cu", "route_kernel.cu", "upsample_kernel.cu", "refine_kernel.cu"} <= names


@pytest.mark.parametrize("src", KERNELS, ids=lambda p: p.name)
def test_kernel_compiles(src, tmp_path):
    """One nvcc run per file, device code for both sm_80 and sm_90; warnings are errors."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set NVCC or put it on PATH)")
    cmd = [nvcc, "-std=c++17", "-O1", "-gencode", "arch=compute_80,code=sm_80", "-gencode",
           "arch=compute_90,code=sm_90", "-I", str(REPO / "csrc"), "-Werror", "all-warnings",
           "-c", str(src), "-o", str(tmp_path / f"{src.stem}.o")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"


def test_torch_glue_compiles(tmp_path):
    """csrc/cuda/register_cuda.cpp (argument checks, packing, TORCH_LIBRARY_IMPL(pcsr, CUDA))
    passes the C++ compiler's syntax and type checks against torch's headers and the CUDA
    toolkit's, even with a CPU build of torch: the one header such a build leaves out
    (c10/cuda/impl/cuda_cmake_macros.h, generated at torch's build) is stood in for here."""
    nvcc, cxx = _nvcc(), shutil.which("c++") or shutil.which("g++")
    if nvcc is None or cxx is None:
        pytest.skip("nvcc or a C++ compiler not found")
    from torch.utils.cpp_extension import CUDA_HOME, include_paths

    # nvcc may be a wrapper script: the toolkit's headers are found beside CUDA_HOME or the real nvcc
    cuda_inc = next((d / "include" for d in (Path(CUDA_HOME or "/nonexistent"), Path(nvcc).resolve().parents[1],
                                             Path("/usr/local/cuda")) if (d / "include" / "cuda_runtime_api.h").exists()),
                    None)
    if cuda_inc is None:
        pytest.skip("the CUDA toolkit's headers (cuda_runtime_api.h) not found")
    stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stub.parent.mkdir(parents=True)
    stub.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cmd = [cxx, "-std=c++17", "-fsyntax-only", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-I", str(REPO / "csrc"),
           *[f"-I{p}" for p in include_paths()], "-I", str(tmp_path), "-I", str(cuda_inc),
           str(REPO / "csrc" / "cuda" / "register_cuda.cpp")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr[-6000:]}"


# ---- the cuda backend on CUDA tensors (skipped without a GPU / a CUDA build) -------------

BACKEND, DEVICE = "cuda", "cuda"


@pytest.fixture
def cuda_backend():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    skip_unless(BACKEND, DEVICE)


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(CASES))
def test_route_upsample(case, cuda_backend):
    check_route_upsample(BACKEND, DEVICE, case)


@pytest.mark.gpu
@pytest.mark.parametrize("cls_hidden,M,h,w,s", CLASSIFY_CASES)
def test_classify(cls_hidden, M, h, w, s, cuda_backend):
    check_classify(BACKEND, DEVICE, cls_hidden, M, h, w, s)


@pytest.mark.gpu
@pytest.mark.parametrize("M", [2, 3, 4])
@pytest.mark.parametrize("k,adaptive", [(0.0, False), (2.5, False), (50.0, False), (-50.0, False), (0.0, True)])
def test_route(M, k, adaptive, cuda_backend):
    check_route(BACKEND, DEVICE, M, k, adaptive)


@pytest.mark.gpu
@pytest.mark.parametrize("M", [2, 3, 4])
def test_route_adaptive_shapes(M, cuda_backend):
    check_route_adaptive_shapes(BACKEND, DEVICE, M)


@pytest.mark.gpu
@pytest.mark.parametrize("fill", ["random", "one-class", "empty-class"])
def test_upsample(fill, cuda_backend):
    check_upsample(BACKEND, DEVICE, fill)


@pytest.mark.gpu
@pytest.mark.parametrize("M,H,W", REFINE_CASES)
def test_refine(M, H, W, cuda_backend):
    check_refine(BACKEND, DEVICE, M, H, W)


@pytest.mark.gpu
def test_opcheck(cuda_backend):
    import pcsr_kernels
    from conftest import random_problem

    p = random_problem(1, 6, 3, 4, 7, 9, [[20], [10]], [10], seed=13, device=DEVICE)
    args = (p["feat"], p["lr"], list(p["out_size"]), p["classifier"], p["upsamplers"], p["depths"], p["cost"],
            0.5, False, True)
    with pcsr_kernels.use_backend(BACKEND):
        torch.library.opcheck(torch.ops.pcsr.route_upsample.default, args)
