// The pcsr operators: their schemas (pcsr_kernels/schemas.def, through schemas.h). The
// kernels register beside their sources, one TORCH_LIBRARY_IMPL per backend:
//   - CPU:  csrc/cpu/<op>.cpp     (TORCH_LIBRARY_IMPL(pcsr, CPU, m))
//   - CUDA: csrc/cuda/register_cuda.cpp (TORCH_LIBRARY_IMPL(pcsr, CUDA, m)), when built with CUDA.
// A C++ (libtorch) caller reaches them through the dispatcher like any ATen op. The Python
// package adds, on the BackendSelect key, the backend choice (PCSR_BACKEND / set_backend:
// reference, cpu, triton, cuda), which hands the call to these kernels when the compiled
// backend is chosen (pcsr_kernels/ops.py).
#include <torch/library.h>

#include "schemas.h"

TORCH_LIBRARY(pcsr, m) {
  for (const char* schema : pcsr::kSchemas) {
    m.def(schema);
  }
}

#ifdef PCSR_PYTHON_MODULE
// An empty Python module, so that `import pcsr_kernels._C` loads this library (and
// runs the TORCH_LIBRARY static initialisers above) the ordinary way.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
#endif
