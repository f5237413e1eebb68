// pcsr::classify on CPU tensors: the classifier of every HR pixel -> probabilities [B, H, W, M].
#include <torch/library.h>

#include "cpu/engine.h"
#include "cpu/ops.h"

namespace pcsr {
namespace cpu {

at::Tensor classify_cpu(const at::Tensor& feat_, at::IntArrayRef out_size, at::TensorList classifier) {
  const OpArgs a = classify_args(kCpuChecks, feat_, out_size, classifier);
  const int64_t B = a.B, D = a.D, h = a.h, w = a.w, H = a.H, W = a.W, M = a.M;

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

TORCH_LIBRARY_IMPL(pcsr, CPU, m) { m.impl("classify", &classify_cpu); }

}  // namespace cpu
}  // namespace pcsr
