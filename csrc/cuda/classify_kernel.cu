// Classifier of every HR pixel: one thread per pixel (grid-stride), the MLP in per-thread
// arrays, then softmax (probabilities, heavy mass) or the cost-aware decision straight from
// the logits.
#include "cuda/mlp.cuh"

namespace pcsr {
namespace cuda {

template <typename T>
__global__ void classify_kernel(Geometry<T> g, const T* __restrict__ P, int64_t ptot, HeadDesc<T> hd, int M,
                                const T* __restrict__ klogc, T* __restrict__ probs, T* __restrict__ heavy,
                                int64_t* __restrict__ classes) {
  T a[kMaxWidth], b[kMaxWidth];
  const int64_t n = g.B * g.H * g.W;
  const int nh = static_cast<int>(common::num_heavy(M));
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t x = i % g.W, y = (i / g.W) % g.H, bi = i / (g.W * g.H);
    const T* prow = P + (bi * g.h * g.w + g.iy[y] * g.w + g.ix[x]) * ptot + hd.poff;
    const T* logits = mlp_forward(hd, prow, g.ry[y], g.rx[x], a, b);
    T p[kMaxHeads];
    if (klogc && !probs && !heavy) {
      classes[i] = common::route_logits(logits, klogc, M, p);
      continue;
    }
    for (int j = 0; j < M; ++j) p[j] = logits[j];
    common::softmax(p, M);
    if (probs)
      for (int j = 0; j < M; ++j) probs[i * M + j] = p[j];
    if (heavy) heavy[i] = common::heavy_mass(p, nh);
    if (klogc) classes[i] = common::route_cost_aware(p, klogc, M);
  }
}

template <typename T>
void launch_classify(const Geometry<T>& g, const T* P, int64_t ptot, const HeadDesc<T>& classifier, int M,
                     const T* klogc, T* probs, T* heavy, int64_t* classes, cudaStream_t stream) {
  const int64_t n = g.B * g.H * g.W;
  if (n == 0) return;
  classify_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(g, P, ptot, classifier, M, klogc, probs, heavy, classes);
}

template void launch_classify<float>(const Geometry<float>&, const float*, int64_t, const HeadDesc<float>&, int,
                                     const float*, float*, float*, int64_t*, cudaStream_t);
template void launch_classify<double>(const Geometry<double>&, const double*, int64_t, const HeadDesc<double>&, int,
                                      const double*, double*, double*, int64_t*, cudaStream_t);

}  // namespace cuda
}  // namespace pcsr
