// pcsr::route_upsample on CPU tensors: classify, route, upsample and refine in one tiled pass (two
// passes with ADM, which needs every pixel's heavy mass before any decision).
#include <torch/library.h>

#include "cpu/engine.h"
#include "cpu/ops.h"

namespace pcsr {
namespace cpu {

std::tuple<at::Tensor, at::Tensor> route_upsample_cpu(const at::Tensor& feat_, const at::Tensor& lr_,
                                                      at::IntArrayRef out_size, at::TensorList classifier,
                                                      at::TensorList upsamplers, at::IntArrayRef depths,
                                                      const at::Tensor& cost, double k, bool adaptive, bool refine,
                                                      std::optional<c10::string_view> precision) {
  const OpArgs a = route_upsample_args(kCpuChecks, feat_, lr_, out_size, classifier, upsamplers, depths, cost, k);
  check_precision(precision);  // exact fp32/fp64 whatever it says

  const at::Tensor& feat = feat_;  // any strides: the kernels gather by stride (channels-last included)
  const at::Tensor lr = lr_.contiguous();
  const int64_t B = a.B, D = a.D, h = a.h, w = a.w, H = a.H, W = a.W, M = a.M;
  const Tables t(h, w, H, W, feat.scalar_type());
  at::Tensor sr = at::empty({B, 3, H, W}, feat.options());                      // [B, 3, H, W]
  at::Tensor classes = at::empty({B, H, W}, feat.options().dtype(at::kLong));  // [B, H, W]
  const std::vector<at::Tensor> cls(classifier.begin(), classifier.end());
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "route_upsample_cpu", [&] {
    using T = scalar_t;
    const Packed<T> pk = pack<T>(cls, a.branches, D, t);
    if (!adaptive) {
      const at::Tensor klogc = k_log_cost(cost.cpu(), k, feat.scalar_type()).contiguous();  // [M]
      PassSpec<T> s;
      s.classify = s.upsample = true;
      s.klogc = klogc.data_ptr<T>();
      s.classes = classes.data_ptr<int64_t>();
      s.lr = lr.data_ptr<T>();
      s.sr = sr.data_ptr<T>();
      run_pass<T>(feat, t, pk, M, s);
    } else {
      {
        at::Tensor heavy = at::empty({B, H * W}, feat.options());  // [B, H*W]
        PassSpec<T> s;
        s.classify = true;
        s.heavy = heavy.data_ptr<T>();
        run_pass<T>(feat, t, pk, M, s);
        adm<T>(heavy.data_ptr<T>(), B, H * W, M, classes.data_ptr<int64_t>());
      }
      PassSpec<T> s;
      s.upsample = true;
      s.classes = classes.data_ptr<int64_t>();
      s.lr = lr.data_ptr<T>();
      s.sr = sr.data_ptr<T>();
      run_pass<T>(feat, t, pk, M, s);
    }
    if (refine) refine_inplace<T>(sr.data_ptr<T>(), classes.data_ptr<int64_t>(), B, H, W, M);
  });
  return {sr, classes};
}

TORCH_LIBRARY_IMPL(pcsr, CPU, m) { m.impl("route_upsample", &route_upsample_cpu); }

}  // namespace cpu
}  // namespace pcsr
