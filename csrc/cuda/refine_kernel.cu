// Pixel-wise refinement: one thread per pixel, out-of-place (reads the unrefined image).
#include "cuda/mlp.cuh"

namespace pcsr {
namespace cuda {

template <typename T>
__global__ void refine_kernel(const T* __restrict__ sr, const int64_t* __restrict__ classes, int64_t B, int64_t H,
                              int64_t W, int64_t nh, T* __restrict__ out) {
  const int64_t n = B * H * W, plane = H * W;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t x = i % W, y = (i / W) % H, b = i / plane;
    const T* s = sr + b * 3 * plane + y * W;
    T* o = out + b * 3 * plane + y * W;
    const int64_t* c1 = classes + b * plane + y * W;
    const bool interior = y > 0 && y < H - 1 && x > 0 && x < W - 1;
    if (interior && common::refine_here(c1 - W, c1, c1 + W, x, nh)) {
      for (int c = 0; c < 3; ++c) o[c * plane + x] = common::mean3x3(s + c * plane - W, s + c * plane, s + c * plane + W, x);
    } else {
      for (int c = 0; c < 3; ++c) o[c * plane + x] = s[c * plane + x];
    }
  }
}

template <typename T>
void launch_refine(const T* sr, const int64_t* classes, int64_t B, int64_t H, int64_t W, int num_branches, T* out,
                   cudaStream_t stream) {
  const int64_t n = B * H * W;
  if (n == 0) return;
  refine_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(sr, classes, B, H, W, common::num_heavy(num_branches), out);
}

template void launch_refine<float>(const float*, const int64_t*, int64_t, int64_t, int64_t, int, float*, cudaStream_t);
template void launch_refine<double>(const double*, const int64_t*, int64_t, int64_t, int64_t, int, double*,
                                    cudaStream_t);

}  // namespace cuda
}  // namespace pcsr
