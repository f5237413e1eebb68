// pcsr_cpu::upsample: the routed MLP residual + bilinear(lr) for given classes, unrefined.
#include <torch/library.h>

#include "cpu/engine.h"
#include "cpu/ops.h"

namespace pcsr {
namespace cpu {

at::Tensor upsample_cpu(const at::Tensor& feat_, const at::Tensor& lr_, const at::Tensor& classes_,
                        at::TensorList upsamplers, at::IntArrayRef depths) {
  check_feat(feat_);
  check_cpu("feat", feat_);
  check_kernel_dtype("cpu", feat_);
  check_lr(lr_, feat_);
  const int64_t B = feat_.size(0), D = feat_.size(1), h = feat_.size(2), w = feat_.size(3);
  const auto branches = checked_branches(upsamplers, depths, feat_);
  const int64_t M = static_cast<int64_t>(depths.size());
  check_tensor("classes", classes_, 3);
  const int64_t H = classes_.size(1), W = classes_.size(2);
  TORCH_CHECK_VALUE(H > 0 && W > 0, "classes must be [B, H, W] with H, W > 0, got ", shape(classes_));
  check_classes(classes_, B, H, W, M, feat_.device());

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

TORCH_LIBRARY_IMPL(pcsr_cpu, CPU, m) { m.impl("upsample", &upsample_cpu); }

}  // namespace cpu
}  // namespace pcsr
