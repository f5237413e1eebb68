// pcsr::refine on CPU tensors: light pixels next to heavy ones take the 3x3 mean (border untouched).
#include <torch/library.h>

#include "cpu/engine.h"
#include "cpu/ops.h"

namespace pcsr {
namespace cpu {

at::Tensor refine_cpu(const at::Tensor& sr_, const at::Tensor& classes_, int64_t num_branches) {
  const OpArgs a = refine_args(kCpuChecks, sr_, classes_, num_branches);
  const int64_t B = a.B, H = a.H, W = a.W;

  at::Tensor out = sr_.clone(at::MemoryFormat::Contiguous);
  const at::Tensor classes = classes_.contiguous();
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "refine_cpu", [&] {
    refine_inplace<scalar_t>(out.data_ptr<scalar_t>(), classes.data_ptr<int64_t>(), B, H, W, num_branches);
  });
  return out;
}

TORCH_LIBRARY_IMPL(pcsr, CPU, m) { m.impl("refine", &refine_cpu); }

}  // namespace cpu
}  // namespace pcsr
