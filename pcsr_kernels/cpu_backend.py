"""The ``cpu`` backend: the C++ kernels of ``csrc/cpu``, the ``CPU`` kernels of ``torch.ops.pcsr``.

They are compiled into ``pcsr_kernels._C``, which registers them on the dispatcher itself
(``TORCH_LIBRARY_IMPL(pcsr, CPU, m)``); when this backend is chosen, the backend choice
(:mod:`pcsr_kernels.ops`, on the ``BackendSelect`` key) hands the call on to them. When the
extension is missing this backend is not registered and ``backend.availability("cpu", ...)``
says how to build it. CPU tensors only; float32 and float64 (other dtypes raise a
``TypeError`` that names the dtype -- the reference backend handles them).
"""
from __future__ import annotations

from . import compiled

compiled.register("cpu", "CPU")
