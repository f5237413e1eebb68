// pcsr_cpu::refine: light pixels next to heavy ones take the 3x3 mean (border untouched).
#include <torch/library.h>

#include "cpu/engine.h"
#include "cpu/ops.h"

namespace pcsr {
namespace cpu {

at::Tensor refine_cpu(const at::Tensor& sr_, const at::Tensor& classes_, int64_t num_branches) {
  check_tensor("sr", sr_, 4);
  check_cpu("sr", sr_);
  TORCH_CHECK_VALUE(sr_.size(1) == 3, "sr must be [B, 3, H, W], got ", shape(sr_));
  TORCH_CHECK_VALUE(sr_.is_floating_point(), "sr must be floating point, got ", fmt(sr_));
  check_kernel_dtype("cpu", sr_);
  TORCH_CHECK_VALUE(num_branches >= 2, "num_branches must be >= 2, got ", num_branches);
  const int64_t B = sr_.size(0), H = sr_.size(2), W = sr_.size(3);
  check_classes(classes_, B, H, W, num_branches, sr_.device());

  at::Tensor out = sr_.clone(at::MemoryFormat::Contiguous);
  const at::Tensor classes = classes_.contiguous();
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "refine_cpu", [&] {
    refine_inplace<scalar_t>(out.data_ptr<scalar_t>(), classes.data_ptr<int64_t>(), B, H, W, num_branches);
  });
  return out;
}

TORCH_LIBRARY_IMPL(pcsr_cpu, CPU, m) { m.impl("refine", &refine_cpu); }

}  // namespace cpu
}  // namespace pcsr
