// pcsr_cpu::classify: the classifier of every HR pixel -> probabilities [B, H, W, M].
#include <torch/library.h>

#include "cpu/engine.h"
#include "cpu/ops.h"

namespace pcsr {
namespace cpu {

at::Tensor classify_cpu(const at::Tensor& feat_, at::IntArrayRef out_size, at::TensorList classifier) {
  check_feat(feat_);
  check_cpu("feat", feat_);
  check_kernel_dtype("cpu", feat_);
  const auto hw = check_out_size(out_size);
  const int64_t H = hw.first, W = hw.second;
  const int64_t B = feat_.size(0), D = feat_.size(1), h = feat_.size(2), w = feat_.size(3);
  const auto widths = check_mlp("classifier", classifier, D + 4, -1, feat_);
  const int64_t M = widths.back();

  const at::Tensor& feat = feat_;  // any strides: the kernels gather by stride (channels-last included)
  const Tables t(h, w, H, W, feat.scalar_type());
  at::Tensor probs = at::empty({B, H, W, M}, feat.options());  // [B, H, W, M]
  const std::vector<at::Tensor> cls(classifier.begin(), classifier.end());
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "classify_cpu", [&] {
    using T = scalar_t;
    const Packed<T> pk = pack<T>(cls, {}, D, t);
    PassSpec<T> s;
    s.classify = true;
    s.probs = probs.data_ptr<T>();
    run_pass<T>(feat, t, pk, M, s);
  });
  return probs;
}

TORCH_LIBRARY_IMPL(pcsr_cpu, CPU, m) { m.impl("classify", &classify_cpu); }

}  // namespace cpu
}  // namespace pcsr
