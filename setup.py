"""Build the pcsr C++/CUDA extension and install the `pcsr_kernels` and `pcsr` packages.

Environment knobs (as PyTorch's own extensions honour them):
  MAX_JOBS                parallel compile jobs (ninja)
  TORCH_CUDA_ARCH_LIST    CUDA architectures, e.g. "8.0;9.0"
  DEBUG=1                 -O0 -g builds
  PCSR_NO_EXTENSION=1     skip the C++ extension entirely (pure-PyTorch reference only)
  PCSR_FORCE_CUDA=1       compile the CUDA sources even if torch was built without CUDA
                          (only useful to check that they compile)
  PCSR_NO_CUDA=1          build the C++ CPU kernels only, even where CUDA is available

CUDA sources are compiled when torch has CUDA (`torch.version.cuda`) and a CUDA toolkit
is found -- never decided by `torch.cuda.is_available()`, so a GPU-less build machine
still produces a CUDA-enabled wheel.
"""
import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    if os.environ.get("PCSR_NO_EXTENSION", "0") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    debug = os.environ.get("DEBUG", "0") == "1"
    # The extension is built on the machine that runs it (pip install -e), so -march=native
    # is safe and lets the compiler vectorise the per-pixel loops; PCSR_PORTABLE=1 turns it off.
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    if not debug and os.environ.get("PCSR_PORTABLE", "0") != "1" and _x86():
        cxx.append("-march=native")
    cxx.append("-fopenmp")
    # No implicit a*b+c -> fma: the CPU kernels mirror the reference's float arithmetic
    # where it decides a class (tables, ADM); the GEMM microkernel asks for FMA explicitly.
    cxx.append("-ffp-contract=off")
    cxx += ["-std=c++17", "-DPCSR_PYTHON_MODULE"]
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) + glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    with_cuda = bool(cuda_sources) and os.environ.get("PCSR_NO_CUDA", "0") != "1" and (
        (torch.version.cuda is not None and CUDA_HOME is not None) or os.environ.get("PCSR_FORCE_CUDA") == "1"
    )
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        # No --use_fast_math: approximate exp/log and flushed subnormals would move the
        # softmax and routing of csrc/cuda away from the reference's.
        nvcc = ["-O0", "-g", "-G"] if debug else ["-O3"]
        nvcc += ["-std=c++17", "-DPCSR_PYTHON_MODULE"]
        ext = CUDAExtension(
            "pcsr_kernels._C",
            sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=[("PCSR_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx + ["-DPCSR_WITH_CUDA"], "nvcc": nvcc},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            "pcsr_kernels._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


def _x86():
    import platform

    return platform.machine() in ("x86_64", "AMD64")


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["pcsr_kernels", "pcsr_kernels.*"]) + find_packages("python"),
    package_dir={"pcsr": "python/pcsr"},
    package_data={"pcsr": ["weights/*.safetensors", "assets/*"], "pcsr_kernels": ["schemas.def"]},
    include_package_data=True,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
