// Routing of given probabilities: cost-aware argmax per pixel, and the pieces of ADM
// (heavy mass, one Lloyd assignment step with per-cluster count/sum, final labels). The
// host loop of ADM (normalisation, centre updates, stopping rule) is in register_cuda.cpp.
#include "cuda/mlp.cuh"

namespace pcsr {
namespace cuda {

template <typename T>
__global__ void route_kernel(const T* __restrict__ probs, int64_t n, int M, const T* __restrict__ klogc,
                             int64_t* __restrict__ classes) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    classes[i] = common::route_cost_aware(probs + i * M, klogc, M);
}

template <typename T>
__global__ void heavy_mass_kernel(const T* __restrict__ probs, int64_t n, int M, T* __restrict__ heavy) {
  const int nh = static_cast<int>(common::num_heavy(M));
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    heavy[i] = common::heavy_mass(probs + i * M, nh);
}

// Per-cluster count and sum of the finite values, reduced in shared memory per block, then one atomicAdd per
// block and cluster (doubles: the totals do not depend on the order to ~1e-16).
template <typename T>
__global__ void adm_step_kernel(const T* __restrict__ v, int64_t n, int M, const T* __restrict__ centres,
                                double* __restrict__ acc) {
  __shared__ double part[2 * kMaxHeads];
  __shared__ T c[kMaxHeads];
  for (int j = threadIdx.x; j < 2 * M; j += blockDim.x) part[j] = 0.0;
  for (int j = threadIdx.x; j < M; j += blockDim.x) c[j] = centres[j];
  __syncthreads();
  double cnt[kMaxHeads], sum[kMaxHeads];
  for (int j = 0; j < M; ++j) cnt[j] = sum[j] = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!common::is_finite(v[i])) continue;  // left out of ADM's statistics (branch 0)
    const int l = common::adm_nearest(v[i], c, M);
    cnt[l] += 1.0;
    sum[l] += static_cast<double>(v[i]);
  }
  for (int j = 0; j < M; ++j) {
    atomicAdd(&part[2 * j], cnt[j]);
    atomicAdd(&part[2 * j + 1], sum[j]);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < 2 * M; j += blockDim.x) atomicAdd(&acc[j], part[j]);
}

template <typename T>
__global__ void adm_label_kernel(const T* __restrict__ v, int64_t n, int M, const T* __restrict__ centres,
                                 const int64_t* __restrict__ rank, int64_t* __restrict__ classes) {
  __shared__ T c[kMaxHeads];
  __shared__ int64_t r[kMaxHeads];
  for (int j = threadIdx.x; j < M; j += blockDim.x) {
    c[j] = centres[j];
    r[j] = rank[j];
  }
  __syncthreads();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    classes[i] = common::is_finite(v[i]) ? r[common::adm_nearest(v[i], c, M)] : 0;
}

template <typename T>
void launch_route(const T* probs, int64_t n, int M, const T* klogc, int64_t* classes, cudaStream_t stream) {
  if (n) route_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(probs, n, M, klogc, classes);
}

template <typename T>
void launch_heavy_mass(const T* probs, int64_t n, int M, T* heavy, cudaStream_t stream) {
  if (n) heavy_mass_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(probs, n, M, heavy);
}

template <typename T>
void launch_adm_step(const T* v, int64_t n, int M, const T* centres, double* acc, cudaStream_t stream) {
  if (n) {
    // Few blocks: each block's partial sums cost one atomicAdd per cluster.
    const unsigned int blocks = blocks_for(n) < 1024 ? blocks_for(n) : 1024;
    adm_step_kernel<T><<<blocks, kThreads, 0, stream>>>(v, n, M, centres, acc);
  }
}

template <typename T>
void launch_adm_label(const T* v, int64_t n, int M, const T* centres, const int64_t* rank, int64_t* classes,
                      cudaStream_t stream) {
  if (n) adm_label_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(v, n, M, centres, rank, classes);
}

#define PCSR_INSTANTIATE(T)                                                                                        \
  template void launch_route<T>(const T*, int64_t, int, const T*, int64_t*, cudaStream_t);                         \
  template void launch_heavy_mass<T>(const T*, int64_t, int, T*, cudaStream_t);                                    \
  template void launch_adm_step<T>(const T*, int64_t, int, const T*, double*, cudaStream_t);                       \
  template void launch_adm_label<T>(const T*, int64_t, int, const T*, const int64_t*, int64_t*, cudaStream_t);
PCSR_INSTANTIATE(float)
PCSR_INSTANTIATE(double)
#undef PCSR_INSTANTIATE

}  // namespace cuda
}  // namespace pcsr
