#pragma once
// Device helpers shared by the pcsr CUDA kernels: launch shape and the per-thread MLP.
#include "common/pixel_math.h"
#include "cuda/kernels.h"

namespace pcsr {
namespace cuda {

constexpr int kThreads = 128;

inline unsigned int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  const int64_t cap = 65535LL * 32;  // grid-stride loops cover the rest
  return static_cast<unsigned int>(b < 1 ? 1 : (b > cap ? cap : b));
}

// ReLU that keeps NaN, as torch.relu (`v > 0 ? v : 0` would turn NaN into 0).
template <typename T>
__device__ __forceinline__ T relu(T v) {
  return v < T(0) ? T(0) : v;
}

// The MLP `hd` of one pixel, whose P row (already offset to the head's columns) is `prow`:
// first layer prow + wry * ry + wrx * rx (ReLU when hidden), then every layer with the
// activations in per-thread arrays a and b (kMaxWidth each). Returns the output.
// The weights are read by every thread of a warp at the same address (the threads of a
// warp mostly run the same head: pixels are sorted by class), a broadcast.
template <typename T>
__device__ const T* mlp_forward(const HeadDesc<T>& hd, const T* prow, T ry, T rx, T* a, T* b) {
  for (int o = 0; o < hd.n1; ++o) {
    const T v = (prow[o] + __ldg(hd.wry + o) * ry) + __ldg(hd.wrx + o) * rx;
    a[o] = hd.relu1 ? relu(v) : v;
  }
  T* in = a;
  T* out = b;
  for (int l = 0; l < hd.nl; ++l) {
    const T* W = hd.W[l];
    const T* bias = hd.b[l];
    const int K = hd.K[l], N = hd.N[l];
    const bool act = l + 1 < hd.nl;
    for (int o = 0; o < N; ++o) {
      const T* wr = W + static_cast<int64_t>(o) * K;
      T acc = __ldg(bias + o);
      for (int k = 0; k < K; ++k) acc += __ldg(wr + k) * in[k];
      out[o] = act ? relu(acc) : acc;
    }
    T* t = in;
    in = out;
    out = t;
  }
  return in;
}

}  // namespace cuda
}  // namespace pcsr
