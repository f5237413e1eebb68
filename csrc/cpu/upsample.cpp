// pcsr::upsample on CPU tensors: the routed MLP residual + bilinear(lr) for given classes, unrefined.
#include <torch/library.h>

#include "cpu/engine.h"
#include "cpu/ops.h"

namespace pcsr {
namespace cpu {

at::Tensor upsample_cpu(const at::Tensor& feat_, const at::Tensor& lr_, const at::Tensor& classes_,
                        at::TensorList upsamplers, at::IntArrayRef depths,
                        std::optional<c10::string_view> precision) {
  const OpArgs a = upsample_args(kCpuChecks, feat_, lr_, classes_, upsamplers, depths);
  check_precision(precision);  // exact fp32/fp64 whatever it says
  const int64_t B = a.B, D = a.D, h = a.h, w = a.w, H = a.H, W = a.W, M = a.M;
  const auto& branches = a.branches;

  const at::Tensor& feat = feat_;  // any strides: the kernels gather by stride (channels-last included)
  const at::Tensor lr = lr_.contiguous(), classes = classes_.contiguous();
  const Tables t(h, w, H, W, feat.scalar_type());
  at::Tensor sr = at::empty({B, 3, H, W}, feat.options());  // [B, 3, H, W]
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "upsample_cpu", [&] {
    using T = scalar_t;
    const Packed<T> pk = pack<T>({}, branches, D, t);
    PassSpec<T> s;
    s.upsample = true;
    s.classes = const_cast<int64_t*>(classes.data_ptr<int64_t>());  // read only in this pass
    s.lr = lr.data_ptr<T>();
    s.sr = sr.data_ptr<T>();
    run_pass<T>(feat, t, pk, M, s);
  });
  return sr;
}

TORCH_LIBRARY_IMPL(pcsr, CPU, m) { m.impl("upsample", &upsample_cpu); }

}  // namespace cpu
}  // namespace pcsr
