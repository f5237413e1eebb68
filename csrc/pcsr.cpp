// Schemas of the pcsr operators. Kernels register elsewhere:
//   - the public ops below get their CPU/CUDA implementations from Python
//     (pcsr_kernels/ops.py), which chooses a backend (reference, cpu, triton, cuda)
//     at call time -- that is what makes PCSR_BACKEND a flag rather than a rebuild;
//   - compiled kernels live in their own namespaces (pcsr_cpu::, pcsr_cuda::), one
//     TORCH_LIBRARY per backend, and are called by that Python dispatcher.
// The same schema strings are repeated in pcsr_kernels/schemas.py for machines where
// this extension is not built; tests/test_ops.py checks the two agree.
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
