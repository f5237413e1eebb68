// The CUDA kernels of the pcsr ops (TORCH_LIBRARY_IMPL(pcsr, CUDA)): the torch glue of
// csrc/cuda/*_kernel.cu. Per op: check the
// arguments, take a device guard and the current stream, build the geometry tables (on
// the host, with the reference's ATen arithmetic, then copied), pack the weights, compute
// the LR precompute P = W_z z + b0 + W_cell cell with one batched GEMM (cuBLAS), launch.
// Built only when torch has CUDA. From Python they run when the cuda backend is chosen
// (PCSR_BACKEND=cuda; pcsr_kernels/cuda_backend.py); from C++ the dispatcher calls them
// for CUDA tensors.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/checks.h"
#include "common/op_args.h"
#include "common/tables.h"
#include "cuda/kernels.h"

namespace pcsr {
namespace cuda {
namespace {

constexpr int kAdmMaxSteps = 20;  // the authors' K-means: at most 20 Lloyd steps ...
constexpr double kAdmTol = 1e-4;  // ... or until the summed squared centre shift <= 1e-4

void check_cuda(const char* name, const at::Tensor& t) {
  PCSR_CHECK_VALUE(t.is_cuda(), "pcsr cuda backend: ", name, " must be a CUDA tensor, got ", fmt(t));
}

// The CUDA backend's part of the per-op checks (common/op_args.h): a branch is a kernel head.
constexpr BackendChecks kCudaChecks{"cuda", &check_cuda, kMaxHeads - 1};

template <typename T>
struct DeviceGeometry {
  Geometry<T> g{};
  std::vector<at::Tensor> keep;
};

at::Tensor on_device(const at::Tensor& x, const at::Device& dev, std::vector<at::Tensor>& keep) {
  keep.push_back(x.to(dev).contiguous());
  return keep.back();
}

template <typename T>
DeviceGeometry<T> make_geometry(const Tables& t, int64_t B, const at::Device& dev) {
  DeviceGeometry<T> d;
  std::vector<at::Tensor>& k = d.keep;
  d.g.B = B;
  d.g.h = t.h;
  d.g.w = t.w;
  d.g.H = t.H;
  d.g.W = t.W;
  d.g.iy = on_device(t.iy, dev, k).data_ptr<int64_t>();
  d.g.ix = on_device(t.ix, dev, k).data_ptr<int64_t>();
  d.g.ry = on_device(t.ry, dev, k).data_ptr<T>();
  d.g.rx = on_device(t.rx, dev, k).data_ptr<T>();
  d.g.by0 = on_device(t.by.i0, dev, k).data_ptr<int64_t>();
  d.g.by1 = on_device(t.by.i1, dev, k).data_ptr<int64_t>();
  d.g.bx0 = on_device(t.bx.i0, dev, k).data_ptr<int64_t>();
  d.g.bx1 = on_device(t.bx.i1, dev, k).data_ptr<int64_t>();
  d.g.bly = on_device(t.by.lam, dev, k).data_ptr<T>();
  d.g.blx = on_device(t.bx.lam, dev, k).data_ptr<T>();
  return d;
}

// Every MLP's first layer split (LR part into WzT/pbias columns, rel-coord columns into
// wry/wrx) and its other layers' pointers, for the kernels.
template <typename T>
struct DevicePack {
  int64_t ptot = 0;
  at::Tensor WzT, pbias;  // [D, ptot], [ptot]
  std::vector<HeadDesc<T>> heads;
  std::vector<at::Tensor> keep;
};

template <typename T>
DevicePack<T> pack(const std::vector<std::vector<at::Tensor>>& mlps, const std::vector<std::string>& names,
                   int64_t D, const Tables& t, const at::Tensor& feat) {
  DevicePack<T> pk;
  for (const auto& m : mlps) pk.ptot += m[0].size(0);
  pk.WzT = at::zeros({D, pk.ptot}, feat.options());
  pk.pbias = at::zeros({pk.ptot}, feat.options());
  int64_t poff = 0;
  for (size_t i = 0; i < mlps.size(); ++i) {
    const auto& m = mlps[i];
    const int64_t nl = static_cast<int64_t>(m.size()) / 2;
    PCSR_CHECK_VALUE(nl - 1 <= kMaxLayers, "pcsr cuda backend: ", names[i], " has ", nl,
                      " Linear layers; at most ", kMaxLayers + 1, " are supported");
    const at::Tensor W0 = m[0].contiguous(), b0 = m[1].contiguous();  // [n1, D+4], [n1]
    const int64_t n1 = W0.size(0);
    pk.WzT.narrow(1, poff, n1).copy_(W0.narrow(1, 0, D).t());
    pk.pbias.narrow(0, poff, n1).copy_(b0 + W0.select(1, D + 2) * t.cell_y + W0.select(1, D + 3) * t.cell_x);
    HeadDesc<T> hd{};
    hd.n1 = static_cast<int>(n1);
    hd.poff = static_cast<int>(poff);
    hd.nl = static_cast<int>(nl - 1);
    hd.relu1 = nl > 1;
    at::Tensor wry = W0.select(1, D).contiguous(), wrx = W0.select(1, D + 1).contiguous();
    pk.keep.insert(pk.keep.end(), {wry, wrx});
    hd.wry = wry.data_ptr<T>();
    hd.wrx = wrx.data_ptr<T>();
    int64_t widest = n1;
    for (int64_t l = 1; l < nl; ++l) {
      at::Tensor Wl = m[2 * l].contiguous(), bl = m[2 * l + 1].contiguous();
      pk.keep.insert(pk.keep.end(), {Wl, bl});
      hd.K[l - 1] = static_cast<int>(Wl.size(1));
      hd.N[l - 1] = static_cast<int>(Wl.size(0));
      hd.W[l - 1] = Wl.data_ptr<T>();
      hd.b[l - 1] = bl.data_ptr<T>();
      widest = std::max(widest, Wl.size(0));
    }
    PCSR_CHECK_VALUE(widest <= kMaxWidth, "pcsr cuda backend: ", names[i], " has a layer of width ", widest,
                      "; at most ", kMaxWidth, " are supported (use the triton backend)");
    pk.heads.push_back(hd);
    poff += n1;
  }
  return pk;
}

// P [B, h*w, ptot]: the LR terms of every head, one batched GEMM.
at::Tensor lr_terms(const at::Tensor& feat, const at::Tensor& WzT, const at::Tensor& pbias) {
  const int64_t B = feat.size(0), D = feat.size(1), hw = feat.size(2) * feat.size(3);
  at::Tensor z = feat.reshape({B, D, hw}).transpose(1, 2);  // [B, hw, D]
  return at::matmul(z, WzT).add_(pbias).contiguous();
}

template <typename T>
Heads<T> branch_heads(const DevicePack<T>& pk, size_t first) {
  Heads<T> h{};
  for (size_t j = first; j < pk.heads.size(); ++j) h.h[j - first] = pk.heads[j];
  return h;
}

std::vector<std::string> branch_names(size_t M, bool with_classifier) {
  std::vector<std::string> n;
  if (with_classifier) n.push_back("classifier");
  for (size_t j = 0; j < M; ++j) n.push_back("upsamplers (branch " + std::to_string(j) + ")");
  return n;
}

// ADM of every image on the device: heavy [B, N] (normalised in place) -> classes [B, N].
// The reference's steps: exact counts, float64 sums (their order differs from the
// reference's, which on a GPU is not deterministic either; in float64 it moves a centre
// by ~1e-16, below the rounding to float32), each centre rounded to T once.
template <typename T>
void adm(at::Tensor heavy, int64_t M, at::Tensor classes, cudaStream_t stream) {
  const int64_t B = heavy.size(0), N = heavy.size(1);
  const auto dev = heavy.device();
  for (int64_t b = 0; b < B; ++b) {
    at::Tensor v = heavy[b];
    at::Tensor cls = classes.view({B, N})[b];
    // Non-finite values are left out of lo/hi and of the K-means and go to branch 0, as
    // adm_ref (the kernels skip them: after the normalisation they stay non-finite).
    const at::Tensor finite = at::isfinite(v);
    const int64_t nfin = finite.sum().item<int64_t>();
    if (nfin == 0) {
      cls.fill_(0);
      continue;
    }
    const bool all_finite = nfin == N;
    const at::Tensor lo = all_finite ? v.min() : v.masked_fill(finite.logical_not(), INFINITY).min();
    const at::Tensor hi = all_finite ? v.max() : v.masked_fill(finite.logical_not(), -INFINITY).max();
    if (!(hi > lo).item<bool>()) {
      cls.fill_(M - 1);
      if (!all_finite) cls.masked_fill_(finite.logical_not(), 0);
      continue;
    }
    v.sub_(lo).div_(hi.sub(lo));
    std::vector<T> c(M), cprev(M), nc(M);
    const bool empty_to_zero = M == 2;
    if (M == 2) {
      const at::Tensor vf = all_finite ? v : v.masked_select(finite);
      c[0] = vf.sum(at::kDouble).div(nfin).to(heavy.scalar_type()).template item<T>();
      c[1] = T(0);
    } else {
      for (int64_t j = 0; j < M; ++j) c[j] = T(2 * j + 1) / T(2 * M);
    }
    auto to_dev = [&](const std::vector<T>& x) {
      return at::tensor(at::ArrayRef<T>(x), at::TensorOptions().dtype(heavy.scalar_type())).to(dev);
    };
    for (int step = 0; step < kAdmMaxSteps - 1; ++step) {
      at::Tensor cd = to_dev(c);
      at::Tensor acc = at::zeros({2 * M}, heavy.options().dtype(at::kDouble));
      launch_adm_step<T>(v.data_ptr<T>(), N, static_cast<int>(M), cd.data_ptr<T>(), acc.data_ptr<double>(), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const at::Tensor a = acc.cpu();
      const double* ap = a.data_ptr<double>();
      T shift = T(0);
      for (int64_t j = 0; j < M; ++j) {
        const double cnt = ap[2 * j], sum = ap[2 * j + 1];  // exact count; float64 sum
        nc[j] = cnt > 0 ? static_cast<T>(sum / cnt) : (empty_to_zero ? T(0) : c[j]);
        const T d = nc[j] - c[j];
        shift += d * d;
      }
      cprev = c;
      c = nc;
      if (static_cast<double>(shift) <= kAdmTol) break;
    }
    std::vector<int64_t> order(M), rank(M);
    for (int64_t j = 0; j < M; ++j) order[j] = j;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t q) { return c[a] > c[q]; });
    for (int64_t r = 0; r < M; ++r) rank[order[r]] = r;
    at::Tensor cd = to_dev(cprev);
    at::Tensor rd = at::tensor(at::ArrayRef<int64_t>(rank), at::TensorOptions().dtype(at::kLong)).to(dev);
    launch_adm_label<T>(v.data_ptr<T>(), N, static_cast<int>(M), cd.data_ptr<T>(), rd.data_ptr<int64_t>(),
                        cls.data_ptr<int64_t>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> route_upsample_cuda(const at::Tensor& feat_, const at::Tensor& lr_,
                                                       at::IntArrayRef out_size, at::TensorList classifier,
                                                       at::TensorList upsamplers, at::IntArrayRef depths,
                                                       const at::Tensor& cost, double k, bool adaptive, bool refine,
                                                       std::optional<c10::string_view> precision) {
  const OpArgs a = route_upsample_args(kCudaChecks, feat_, lr_, out_size, classifier, upsamplers, depths, cost, k);
  check_precision(precision);  // these kernels compute in the tensors' dtype whatever it says

  const c10::cuda::CUDAGuard guard(feat_.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor feat = feat_.contiguous(), lr = lr_.contiguous();
  const int64_t B = a.B, D = a.D, h = a.h, w = a.w, H = a.H, W = a.W, M = a.M;
  const Tables t(h, w, H, W, feat.scalar_type());
  at::Tensor sr = at::empty({B, 3, H, W}, feat.options());
  at::Tensor classes = at::empty({B, H, W}, feat.options().dtype(at::kLong));
  std::vector<std::vector<at::Tensor>> mlps{std::vector<at::Tensor>(classifier.begin(), classifier.end())};
  mlps.insert(mlps.end(), a.branches.begin(), a.branches.end());
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "route_upsample_cuda", [&] {
    using T = scalar_t;
    const auto geo = make_geometry<T>(t, B, feat.device());
    const auto pk = pack<T>(mlps, branch_names(M, true), D, t, feat);
    const at::Tensor P = lr_terms(feat, pk.WzT, pk.pbias);  // [B, h*w, ptot]
    if (!adaptive) {
      const at::Tensor klogc = k_log_cost(cost, k, feat.scalar_type()).contiguous();  // [M]
      launch_classify<T>(geo.g, P.data_ptr<T>(), pk.ptot, pk.heads[0], static_cast<int>(M), klogc.data_ptr<T>(),
                         nullptr, nullptr, classes.data_ptr<int64_t>(), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      at::Tensor heavy = at::empty({B, H * W}, feat.options());  // [B, H*W]
      launch_classify<T>(geo.g, P.data_ptr<T>(), pk.ptot, pk.heads[0], static_cast<int>(M), nullptr, nullptr,
                         heavy.data_ptr<T>(), nullptr, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      adm<T>(heavy, M, classes, stream);
    }
    at::Tensor order = at::empty({B * H * W}, classes.options());
    at::Tensor counts = at::empty({M + 1}, classes.options());
    launch_sort_by_class(classes.data_ptr<int64_t>(), B * H * W, static_cast<int>(M), counts.data_ptr<int64_t>(),
                         order.data_ptr<int64_t>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor unrefined = refine ? at::empty_like(sr) : sr;
    launch_upsample<T>(geo.g, P.data_ptr<T>(), pk.ptot, branch_heads(pk, 1), classes.data_ptr<int64_t>(),
                       order.data_ptr<int64_t>(), lr.data_ptr<T>(), unrefined.data_ptr<T>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (refine) {
      launch_refine<T>(unrefined.data_ptr<T>(), classes.data_ptr<int64_t>(), B, H, W, static_cast<int>(M),
                       sr.data_ptr<T>(), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {sr, classes};
}

at::Tensor classify_cuda(const at::Tensor& feat_, at::IntArrayRef out_size, at::TensorList classifier) {
  const OpArgs a = classify_args(kCudaChecks, feat_, out_size, classifier);
  const int64_t B = a.B, D = a.D, h = a.h, w = a.w, H = a.H, W = a.W, M = a.M;
  PCSR_CHECK_VALUE(M >= 1 && M < kMaxHeads, "pcsr cuda backend: the classifier must output 1 to ", kMaxHeads - 1,
                    " values, got ", M);

  const c10::cuda::CUDAGuard guard(feat_.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor feat = feat_.contiguous();
  const Tables t(h, w, H, W, feat.scalar_type());
  at::Tensor probs = at::empty({B, H, W, M}, feat.options());
  const std::vector<std::vector<at::Tensor>> mlps{std::vector<at::Tensor>(classifier.begin(), classifier.end())};
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "classify_cuda", [&] {
    using T = scalar_t;
    const auto geo = make_geometry<T>(t, B, feat.device());
    const auto pk = pack<T>(mlps, {"classifier"}, D, t, feat);
    const at::Tensor P = lr_terms(feat, pk.WzT, pk.pbias);
    launch_classify<T>(geo.g, P.data_ptr<T>(), pk.ptot, pk.heads[0], static_cast<int>(M), nullptr,
                       probs.data_ptr<T>(), nullptr, nullptr, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return probs;
}

at::Tensor route_cuda(const at::Tensor& probs_, const at::Tensor& cost, double k, bool adaptive) {
  const OpArgs a = route_args(kCudaChecks, probs_, cost, k);
  const int64_t B = a.B, H = a.H, W = a.W, M = a.M;

  const c10::cuda::CUDAGuard guard(probs_.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor probs = probs_.contiguous();
  at::Tensor classes = at::empty({B, H, W}, probs.options().dtype(at::kLong));
  const int64_t n = B * H * W;
  if (n == 0) return classes;
  AT_DISPATCH_FLOATING_TYPES(probs.scalar_type(), "route_cuda", [&] {
    using T = scalar_t;
    if (!adaptive) {
      const at::Tensor klogc = k_log_cost(cost, k, probs.scalar_type()).contiguous();
      launch_route<T>(probs.data_ptr<T>(), n, static_cast<int>(M), klogc.data_ptr<T>(), classes.data_ptr<int64_t>(),
                      stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      at::Tensor heavy = at::empty({B, H * W}, probs.options());
      launch_heavy_mass<T>(probs.data_ptr<T>(), n, static_cast<int>(M), heavy.data_ptr<T>(), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      adm<T>(heavy, M, classes, stream);
    }
  });
  return classes;
}

at::Tensor upsample_cuda(const at::Tensor& feat_, const at::Tensor& lr_, const at::Tensor& classes_,
                         at::TensorList upsamplers, at::IntArrayRef depths,
                         std::optional<c10::string_view> precision) {
  const OpArgs a = upsample_args(kCudaChecks, feat_, lr_, classes_, upsamplers, depths);
  check_precision(precision);  // these kernels compute in the tensors' dtype whatever it says
  const int64_t B = a.B, D = a.D, h = a.h, w = a.w, H = a.H, W = a.W, M = a.M;
  const auto& branches = a.branches;

  const c10::cuda::CUDAGuard guard(feat_.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor feat = feat_.contiguous(), lr = lr_.contiguous(), classes = classes_.contiguous();
  const Tables t(h, w, H, W, feat.scalar_type());
  at::Tensor sr = at::empty({B, 3, H, W}, feat.options());
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "upsample_cuda", [&] {
    using T = scalar_t;
    const auto geo = make_geometry<T>(t, B, feat.device());
    const auto pk = pack<T>(branches, branch_names(M, false), D, t, feat);
    const at::Tensor P = lr_terms(feat, pk.WzT, pk.pbias);
    at::Tensor order = at::empty({B * H * W}, classes.options());
    at::Tensor counts = at::empty({M + 1}, classes.options());
    launch_sort_by_class(classes.data_ptr<int64_t>(), B * H * W, static_cast<int>(M), counts.data_ptr<int64_t>(),
                         order.data_ptr<int64_t>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    launch_upsample<T>(geo.g, P.data_ptr<T>(), pk.ptot, branch_heads(pk, 0), classes.data_ptr<int64_t>(),
                       order.data_ptr<int64_t>(), lr.data_ptr<T>(), sr.data_ptr<T>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return sr;
}

at::Tensor refine_cuda(const at::Tensor& sr_, const at::Tensor& classes_, int64_t num_branches) {
  const OpArgs a = refine_args(kCudaChecks, sr_, classes_, num_branches);
  const int64_t B = a.B, H = a.H, W = a.W;

  const c10::cuda::CUDAGuard guard(sr_.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor sr = sr_.contiguous(), classes = classes_.contiguous();
  at::Tensor out = at::empty_like(sr, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(sr.scalar_type(), "refine_cuda", [&] {
    launch_refine<scalar_t>(sr.data_ptr<scalar_t>(), classes.data_ptr<int64_t>(), B, H, W,
                            static_cast<int>(num_branches), out.data_ptr<scalar_t>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace cuda
}  // namespace pcsr

TORCH_LIBRARY_IMPL(pcsr, CUDA, m) {
  m.impl("route_upsample", &pcsr::cuda::route_upsample_cuda);
  m.impl("classify", &pcsr::cuda::classify_cuda);
  m.impl("route", &pcsr::cuda::route_cuda);
  m.impl("upsample", &pcsr::cuda::upsample_cuda);
  m.impl("refine", &pcsr::cuda::refine_cuda);
}
