#pragma once
// The CPU engine behind the pcsr ops' CPU kernels: weight packing, the tiled pass that runs the
// classifier and/or the upsampler branches, ADM, and the in-place refinement stencil.
// Implemented in engine.cpp for float and double; the op files (route_upsample.cpp,
// classify.cpp, route.cpp, upsample.cpp, refine.cpp) validate, allocate and call these.
#include <ATen/ATen.h>

#include <vector>

#include "common/tables.h"

namespace pcsr {
namespace cpu {

// One MLP applied at HR pixels, its first layer split by the exact algebra
//   W0 [z; rc; cell] + b0 = (W_z z + b0 + W_cell cell) + W_ry ry + W_rx rx:
// the bracket depends only on the LR pixel and is computed once per LR pixel (the "P"
// rows of a tile), the last two terms come from per-row / per-column tables.
template <typename T>
struct PackedLayer {
  int64_t K, N, nvec;  // in, out, out vectors (N padded to nvec * L)
  bool relu;
  const T* WT;    // [K][nvec*L], zero-padded columns
  const T* bias;  // [nvec*L]
};

template <typename T>
struct Head {
  int64_t n1, n1pad, poff;  // first-layer width, padded, its columns in a P row / table row
  bool relu1;               // the first layer is hidden (the MLP has more than one layer)
  int64_t out;              // final output width
  std::vector<PackedLayer<T>> rest;  // layers 1 ..
};

template <typename T>
struct Packed {
  int64_t D = 0, ptot = 0, maxpad = 0;
  bool has_classifier = false;
  int64_t cls_cols = 0;  // P columns [0, cls_cols) belong to the classifier, the rest to branches
  const T* WzT = nullptr;    // [D][ptot]
  const T* pbias = nullptr;  // [ptot]: b0 + W_cell . cell
  const T* Ty = nullptr;     // [H][ptot]: W_ry * ry[y]
  const T* Tx = nullptr;     // [W][ptot]: W_rx * rx[x]
  std::vector<Head<T>> heads;  // classifier (when present) first, then branch 0 .. M-1
  std::vector<at::Tensor> storage;

  const Head<T>& classifier() const { return heads[0]; }
  const Head<T>& branch(int64_t j) const { return heads[j + (has_classifier ? 1 : 0)]; }
};

// classifier: its flat [W, b, ...] list, or empty; branches: one flat list per branch.
template <typename T>
Packed<T> pack(const std::vector<at::Tensor>& classifier, const std::vector<std::vector<at::Tensor>>& branches,
               int64_t D, const Tables& t);

// What one tiled pass does. Pointers are to contiguous CPU tensors of the pass's dtype.
template <typename T>
struct PassSpec {
  bool classify = false;      // run the classifier head
  bool upsample = false;      // run the branches
  T* probs = nullptr;         // out [B, H, W, M] (classify)
  T* heavy = nullptr;         // out [B, H*W] heavy mass (classify, for ADM)
  const T* klogc = nullptr;   // [M]: cost-aware routing in the same pass (classify && upsample)
  int64_t* classes = nullptr; // [B, H, W]: written when routed here, read otherwise
  const T* lr = nullptr;      // [B, 3, h, w] (upsample)
  T* sr = nullptr;            // out [B, 3, H, W] (upsample), unrefined
};

template <typename T>
void run_pass(const at::Tensor& feat, const Tables& t, const Packed<T>& pk, int64_t M, const PassSpec<T>& spec);

// ADM of every image: heavy [B, N] (overwritten by its normalised values) -> classes
// [B, N], exactly as pcsr_kernels.reference.adm_ref decides.
template <typename T>
void adm(T* heavy, int64_t B, int64_t N, int64_t M, int64_t* classes);

// Refinement in place: sr [B, 3, H, W], classes [B, H, W].
template <typename T>
void refine_inplace(T* sr, const int64_t* classes, int64_t B, int64_t H, int64_t W, int64_t num_branches);

}  // namespace cpu
}  // namespace pcsr
