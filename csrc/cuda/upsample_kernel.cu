// Routed upsampling. A counting sort groups the pixel indices by class (histogram with
// atomics, an exclusive scan of the M counts in one thread, a scatter with per-class
// cursors -- MoE token routing's scheme), so the threads of a warp run the same branch;
// then one thread per pixel: the branch MLP in per-thread arrays, plus the bilinear base.
#include "cuda/mlp.cuh"

namespace pcsr {
namespace cuda {

__global__ void class_histogram_kernel(const int64_t* __restrict__ classes, int64_t n, int M,
                                       unsigned long long* __restrict__ counts) {
  __shared__ unsigned long long local[kMaxHeads];
  for (int j = threadIdx.x; j < M; j += blockDim.x) local[j] = 0;
  __syncthreads();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    atomicAdd(&local[classes[i]], 1ULL);
  __syncthreads();
  for (int j = threadIdx.x; j < M; j += blockDim.x)
    if (local[j]) atomicAdd(&counts[j + 1], local[j]);
}

// counts[j+1] = size of class j -> counts[j] = start of class j (inclusive scan, one thread).
__global__ void class_scan_kernel(unsigned long long* counts, int M) {
  if (threadIdx.x == 0 && blockIdx.x == 0)
    for (int j = 0; j < M; ++j) counts[j + 1] += counts[j];
}

__global__ void class_scatter_kernel(const int64_t* __restrict__ classes, int64_t n,
                                     unsigned long long* __restrict__ cursor, int64_t* __restrict__ order) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const unsigned long long at = atomicAdd(&cursor[classes[i]], 1ULL);
    order[at] = i;
  }
}

void launch_sort_by_class(const int64_t* classes, int64_t n, int M, int64_t* counts, int64_t* order,
                          cudaStream_t stream) {
  unsigned long long* c = reinterpret_cast<unsigned long long*>(counts);
  cudaMemsetAsync(c, 0, sizeof(unsigned long long) * (M + 1), stream);
  if (n == 0) return;
  class_histogram_kernel<<<blocks_for(n), kThreads, 0, stream>>>(classes, n, M, c);
  class_scan_kernel<<<1, 1, 0, stream>>>(c, M);
  class_scatter_kernel<<<blocks_for(n), kThreads, 0, stream>>>(classes, n, c, order);
}

template <typename T>
__global__ void upsample_kernel(Geometry<T> g, const T* __restrict__ P, int64_t ptot, Heads<T> heads,
                                const int64_t* __restrict__ classes, const int64_t* __restrict__ order,
                                const T* __restrict__ lr, T* __restrict__ sr) {
  T a[kMaxWidth], b[kMaxWidth];
  const int64_t n = g.B * g.H * g.W;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = order ? order[t] : t;
    const int64_t x = i % g.W, y = (i / g.W) % g.H, bi = i / (g.W * g.H);
    const HeadDesc<T>& hd = heads.h[classes[i]];
    const T* prow = P + (bi * g.h * g.w + g.iy[y] * g.w + g.ix[x]) * ptot + hd.poff;
    const T* res = mlp_forward(hd, prow, g.ry[y], g.rx[x], a, b);
    const T* lrb = lr + bi * 3 * g.h * g.w;
    T* srb = sr + bi * 3 * g.H * g.W + y * g.W + x;
    for (int c = 0; c < 3; ++c) {
      const T base = common::bilinear(lrb + c * g.h * g.w, g.w, g.by0[y], g.by1[y], g.bly[y], g.bx0[x], g.bx1[x],
                                      g.blx[x]);
      srb[c * g.H * g.W] = base + res[c];
    }
  }
}

template <typename T>
void launch_upsample(const Geometry<T>& g, const T* P, int64_t ptot, const Heads<T>& branches,
                     const int64_t* classes, const int64_t* order, const T* lr, T* sr, cudaStream_t stream) {
  const int64_t n = g.B * g.H * g.W;
  if (n == 0) return;
  upsample_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(g, P, ptot, branches, classes, order, lr, sr);
}

template void launch_upsample<float>(const Geometry<float>&, const float*, int64_t, const Heads<float>&,
                                     const int64_t*, const int64_t*, const float*, float*, cudaStream_t);
template void launch_upsample<double>(const Geometry<double>&, const double*, int64_t, const Heads<double>&,
                                      const int64_t*, const int64_t*, const double*, double*, cudaStream_t);

}  // namespace cuda
}  // namespace pcsr
