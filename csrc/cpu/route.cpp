// pcsr::route on CPU tensors: cost-aware argmax per pixel, or ADM per image.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/pixel_math.h"
#include "cpu/engine.h"
#include "cpu/ops.h"

namespace pcsr {
namespace cpu {

at::Tensor route_cpu(const at::Tensor& probs_, const at::Tensor& cost, double k, bool adaptive) {
  const OpArgs a = route_args(kCpuChecks, probs_, cost, k);
  const int64_t B = a.B, H = a.H, W = a.W, M = a.M;

  const at::Tensor probs = probs_.contiguous();
  at::Tensor classes = at::empty({B, H, W}, probs.options().dtype(at::kLong));  // [B, H, W]
  const int64_t N = H * W;
  if (probs.numel() == 0) return classes;
  int64_t* out = classes.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(probs.scalar_type(), "route_cpu", [&] {
    using T = scalar_t;
    const T* p = probs.data_ptr<T>();
    if (!adaptive) {
      const at::Tensor klogc = k_log_cost(cost.cpu(), k, probs.scalar_type()).contiguous();  // [M]
      const T* kl = klogc.data_ptr<T>();
      at::parallel_for(0, B * N, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) out[i] = common::route_cost_aware(p + i * M, kl, static_cast<int>(M));
      });
    } else {
      const int nh = static_cast<int>(common::num_heavy(M));
      at::Tensor heavy = at::empty({B, N}, probs.options());  // [B, H*W]
      T* hv = heavy.data_ptr<T>();
      at::parallel_for(0, B * N, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) hv[i] = common::heavy_mass(p + i * M, nh);
      });
      adm<T>(hv, B, N, M, out);
    }
  });
  return classes;
}

TORCH_LIBRARY_IMPL(pcsr, CPU, m) { m.impl("route", &route_cpu); }

}  // namespace cpu
}  // namespace pcsr
