"""The ``cuda`` backend: the CUDA C++ kernels of ``csrc/cuda``, the ``CUDA`` kernels of
``torch.ops.pcsr``, selected with ``PCSR_BACKEND=cuda`` or ``pcsr_kernels.set_backend("cuda")``.

They are compiled into ``pcsr_kernels._C`` when torch has CUDA and a CUDA toolkit is found
at build time, and registered on the dispatcher by it (``TORCH_LIBRARY_IMPL(pcsr, CUDA, m)``);
otherwise this backend is not registered and ``backend.availability("cuda", ...)`` says why.
CUDA tensors only; float32 and float64.
"""
from __future__ import annotations

from . import compiled

compiled.register("cuda", "CUDA")
