// The pcsr_cpu operator namespace: the same schemas as torch.ops.pcsr, implemented for CPU
// tensors by the files beside this one (one per op). pcsr_kernels/cpu_backend.py hands
// them to the public ops' backend choice; users call torch.ops.pcsr.*, not these.
#include <torch/library.h>

#include "schemas.h"

TORCH_LIBRARY(pcsr_cpu, m) {
  for (const char* schema : pcsr::kSchemas) {
    m.def(schema);
  }
}
