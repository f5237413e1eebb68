#pragma once
// The CUDA kernels of the pcsr ops: launchers on raw device pointers and a given stream.
// This header and the *_kernel.cu files include only CUDA headers and csrc/common, so they
// compile with a bare nvcc (tests/test_cuda_compile.py checks them for sm_80 and sm_90 on
// machines whose torch has no CUDA); register_cuda.cpp is the torch glue (device guard,
// current stream, argument checks, the LR precompute with cuBLAS, ADM's host loop).
//
// Layouts: feat-side precompute P [B, h*w, ptot] (row = LR pixel, columns = the first
// layer's LR terms of every head, head i at columns [poff, poff+n1)); probs [B, H, W, M];
// classes [B, H, W] int64; lr [B, 3, h, w]; sr [B, 3, H, W]. All contiguous.
#include <cuda_runtime_api.h>
#include <stdint.h>

namespace pcsr {
namespace cuda {

constexpr int kMaxLayers = 8;   // Linear layers per MLP after the first
constexpr int kMaxHeads = 9;    // classifier + up to 8 branches
constexpr int kMaxWidth = 256;  // widest hidden layer (per-thread activations)

// One MLP at HR pixels. Its first layer comes from P plus wry * ry + wrx * rx (the
// rel-coord columns of W0; W_z z + b0 + W_cell cell is in P); the other layers are
// nn.Linear weights [N, K] row-major.
template <typename T>
struct HeadDesc {
  int n1, poff, nl, relu1;  // first-layer width, its P column, layers after the first, ReLU after the first
  const T* wry;             // [n1]
  const T* wrx;             // [n1]
  int K[kMaxLayers], N[kMaxLayers];
  const T* W[kMaxLayers];
  const T* b[kMaxLayers];
};

template <typename T>
struct Heads {
  HeadDesc<T> h[kMaxHeads];
};

// Per-axis tables of pcsr_kernels/geometry.py, on the device.
template <typename T>
struct Geometry {
  int64_t B, h, w, H, W;
  const int64_t* iy;  // [H] nearest LR row
  const int64_t* ix;  // [W] nearest LR column
  const T* ry;        // [H] relative coordinate
  const T* rx;        // [W]
  const int64_t *by0, *by1, *bx0, *bx1;  // bilinear taps [H], [H], [W], [W]
  const T *bly, *blx;                    // bilinear weights [H], [W]
};

// Classifier of every HR pixel: writes probs [B,H,W,M] and/or heavy mass [B,H*W] (when
// non-null), and/or routes (klogc non-null: cost-aware decision -> classes).
template <typename T>
void launch_classify(const Geometry<T>& g, const T* P, int64_t ptot, const HeadDesc<T>& classifier, int M,
                     const T* klogc, T* probs, T* heavy, int64_t* classes, cudaStream_t stream);

// Counting sort of the n = B*H*W pixel indices by class: counts [M+1] (scratch, zeroed
// here), order [n] (pixel indices, grouped by class; order within a class unspecified).
void launch_sort_by_class(const int64_t* classes, int64_t n, int M, int64_t* counts, int64_t* order,
                          cudaStream_t stream);

// sr[pixel] = bilinear(lr) + U_class(pixel), for the pixels in `order` (all n of them).
template <typename T>
void launch_upsample(const Geometry<T>& g, const T* P, int64_t ptot, const Heads<T>& branches,
                     const int64_t* classes, const int64_t* order, const T* lr, T* sr, cudaStream_t stream);

// out = refine(sr): out-of-place 3x3 stencil (out must not alias sr).
template <typename T>
void launch_refine(const T* sr, const int64_t* classes, int64_t B, int64_t H, int64_t W, int num_branches, T* out,
                   cudaStream_t stream);

// Cost-aware routing of probabilities [n, M].
template <typename T>
void launch_route(const T* probs, int64_t n, int M, const T* klogc, int64_t* classes, cudaStream_t stream);

// Heavy mass of probabilities [n, M] -> [n].
template <typename T>
void launch_heavy_mass(const T* probs, int64_t n, int M, T* heavy, cudaStream_t stream);

// One ADM assignment step on normalised values v [n]: acc[2j] += count, acc[2j+1] += sum
// of the finite values nearest to centres[j] (acc: [2M] doubles, zeroed by the caller).
template <typename T>
void launch_adm_step(const T* v, int64_t n, int M, const T* centres, double* acc, cudaStream_t stream);

// ADM labels: classes[i] = rank[nearest centre of v[i]], or 0 where v[i] is not finite.
template <typename T>
void launch_adm_label(const T* v, int64_t n, int M, const T* centres, const int64_t* rank, int64_t* classes,
                      cudaStream_t stream);

}  // namespace cuda
}  // namespace pcsr
