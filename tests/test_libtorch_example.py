"""The libtorch example (examples/cpp/upscale.cpp): CMake builds the pcsr library and the
example against the installed torch; the example reads its inputs from a safetensors file,
calls pcsr::route_upsample through the dispatcher (no Python in that process) and writes
sr and classes, which must equal the Python op's.

The build compiles the CPU kernel sources once more (a few minutes on two cores); it is
skipped only where no C++ compiler or no cmake is found."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

import pcsr_kernels
from conftest import REPO, random_problem

CASES = [  # (B, D, h, w, H, W, hidden per branch, classifier hidden, dtype, k, adaptive, refine)
    (2, 6, 5, 7, 19, 27, [[16, 16], [8]], [8], torch.float32, 0.3, False, True),    # x3.8 (odd), k > 0
    (1, 5, 6, 4, 24, 16, [[12], [6], [4, 4]], [], torch.float32, 0.0, True, True),  # x4, M = 3, ADM
    (1, 4, 3, 5, 9, 15, [[8], [4]], [6], torch.float64, -0.5, False, False),        # x3, float64, unrefined
]


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@pytest.fixture(scope="module")
def upscale_exe(tmp_path_factory):
    if _compiler() is None:
        pytest.skip("no C++ compiler found")
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found (scripts/test.sh installs it where it is missing)")
    build = tmp_path_factory.mktemp("cmake-build")
    t0 = time.perf_counter()
    subprocess.run([cmake, "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", "-DPCSR_BUILD_EXAMPLES=ON",
                    "-DPCSR_WITH_CUDA=OFF"], check=True, capture_output=True, text=True, timeout=600)
    # Only the example and the library it needs (the CPU kernel sources), on two jobs.
    r = subprocess.run([cmake, "--build", str(build), "--target", "upscale", "-j2"], capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    print(f"cmake build of the example: {time.perf_counter() - t0:.0f} s")
    exe = build / "upscale"
    assert exe.exists()
    return exe


def _python_backend() -> str:
    """The Python op on the same C++ kernels when the extension is built, else the reference."""
    return "cpu" if pcsr_kernels.backend.availability("cpu", "cpu")[0] else "reference"


@pytest.mark.parametrize("case", range(len(CASES)))
def test_example_equals_python_op(upscale_exe, tmp_path, case):
    B, D, h, w, H, W, hidden, cls, dtype, k, adaptive, refine = CASES[case]
    p = random_problem(B, D, h, w, H, W, hidden, cls, seed=100 + case, dtype=dtype)
    tensors = {"feat": p["feat"], "lr": p["lr"], "cost": p["cost"],
               "out_size": torch.tensor(p["out_size"], dtype=torch.int64),
               "depths": torch.tensor(p["depths"], dtype=torch.int64)}
    tensors.update({f"classifier.{i}": t for i, t in enumerate(p["classifier"])})
    tensors.update({f"upsamplers.{i}": t for i, t in enumerate(p["upsamplers"])})
    save_file(tensors, str(tmp_path / "in.safetensors"),
              metadata={"k": repr(k), "adaptive": str(int(adaptive)), "refine": str(int(refine))})

    r = subprocess.run([str(upscale_exe), str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = load_file(str(tmp_path / "out.safetensors"))

    with pcsr_kernels.use_backend(_python_backend()):
        sr, classes = pcsr_kernels.route_upsample(**p, k=k, adaptive=adaptive, refine=refine)
    assert got["sr"].shape == (B, 3, H, W) and got["sr"].dtype == dtype
    assert got["classes"].dtype == torch.int64 and torch.equal(got["classes"], classes)
    assert (got["sr"] - sr).abs().max().item() <= 1e-6
    assert len(classes.unique()) > 1  # the case routes to more than one branch


def test_example_reports_bad_input(upscale_exe, tmp_path):
    """A missing tensor and an argument the op refuses both end with a message, exit code 1."""
    p = random_problem(1, 4, 3, 5, 9, 15, [[8], [4]], [6], seed=7)
    base = {"feat": p["feat"], "lr": p["lr"], "cost": p["cost"], "depths": torch.tensor(p["depths"]),
            **{f"classifier.{i}": t for i, t in enumerate(p["classifier"])},
            **{f"upsamplers.{i}": t for i, t in enumerate(p["upsamplers"])}}
    save_file(base, str(tmp_path / "a.safetensors"))
    r = subprocess.run([str(upscale_exe), str(tmp_path / "a.safetensors"), str(tmp_path / "o.safetensors")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and 'no tensor "out_size"' in r.stderr
    save_file(dict(base, out_size=torch.tensor([9, 15]), lr=p["lr"][:, :2].contiguous()),
              str(tmp_path / "b.safetensors"))
    r = subprocess.run([str(upscale_exe), str(tmp_path / "b.safetensors"), str(tmp_path / "o.safetensors")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "lr must be [B, 3, h, w] = [1, 3, 3, 5]" in r.stderr
    assert not (tmp_path / "o.safetensors").exists()
