#pragma once
// Host side (ATen): the per-axis lookup tables of pcsr_kernels/geometry.py, built with the
// same ATen operations in the same order, so the nearest-feature choice (and with it every
// routing decision) is bit-identical to the reference's. The tables are tiny (H + W
// entries); the CPU kernels read them directly, the CUDA glue copies them to the device.
#include <ATen/ATen.h>

#include <utility>

namespace pcsr {

// LIIF make_coord: (-1 + r) + 2r * i in float32, r = 1/n in double.
inline at::Tensor liif_coord(int64_t n) {
  const double r = 1.0 / static_cast<double>(n);
  return at::arange(n, at::kFloat).mul(2.0 * r).add(-1.0 + r);
}

// Nearest LR index (int64) and relative coordinate (float32) of n_out HR positions
// (grid_sample mode='nearest', align_corners=False: round half to even).
inline std::pair<at::Tensor, at::Tensor> nearest_axis(int64_t n_out, int64_t n_in) {
  at::Tensor c = liif_coord(n_out);
  at::Tensor src = c.add(1).mul(n_in).sub(1).div(2);
  at::Tensor idx = at::round(src).clamp_(0, n_in - 1).to(at::kLong);
  // Relative coordinate: the exact ((2i+1) n_in - (2 idx+1) n_out) / n_out rounded once to
  // float32, a function of the pixel's phase only (tiles see the whole image's values).
  at::Tensor i = at::arange(n_out, at::kLong);
  at::Tensor num = i.mul(2).add(1).mul(n_in).sub(idx.mul(2).add(1).mul(n_out));
  at::Tensor rel = num.to(at::kDouble).div(static_cast<double>(n_out)).to(at::kFloat);
  return {idx, rel};
}

// Cell size of an HR pixel in LR pixel units, 2 n_in / n_out, rounded once to float32.
// (Rounded by ATen: GCC 12 at -O3 -march=native vectorised the two calls of a plain
// static_cast<float> round trip and dropped the rounding.)
inline double rel_cell(int64_t n_out, int64_t n_in) {
  const double exact = 2.0 * static_cast<double>(n_in) / static_cast<double>(n_out);
  return at::scalar_tensor(exact, at::kDouble).to(at::kFloat).item<double>();
}

// Bilinear taps along one axis as F.interpolate(bilinear, align_corners=False) computes
// them, in `dtype` (its opmath type): out = (1 - lam) * x[i0] + lam * x[i1], both taps
// always computed (0 * inf is NaN there too). An axis of unchanged size has i1 = i0, as
// torch's kernel sets it, so a NaN in the neighbour does not reach the pixel.
struct BilinearAxis {
  at::Tensor i0, i1, lam;  // [n_out] int64, int64, dtype
};

inline BilinearAxis bilinear_axis(int64_t n_out, int64_t n_in, at::ScalarType dtype) {
  at::Tensor scale = at::scalar_tensor(static_cast<double>(n_in), dtype).div(n_out);
  at::Tensor src = at::arange(n_out, dtype).add(0.5).mul(scale).sub(0.5).clamp_min_(0);
  at::Tensor i0 = src.floor().to(at::kLong).clamp_max_(n_in - 1);
  at::Tensor i1 = n_out == n_in ? i0.clone() : i0.add(1).clamp_max_(n_in - 1);
  at::Tensor lam = src.sub(i0.to(dtype)).clamp_(0, 1);
  return {i0, i1, lam};
}

// Every table of one (LR size, HR size) pair, on the CPU; ry/rx/lam in `dtype`.
struct Tables {
  int64_t h, w, H, W;
  at::Tensor iy, ix;  // [H], [W] int64
  at::Tensor ry, rx;  // [H], [W] dtype (float32 values, as the reference casts them)
  double cell_y, cell_x;
  BilinearAxis by, bx;

  Tables(int64_t h_, int64_t w_, int64_t H_, int64_t W_, at::ScalarType dtype) : h(h_), w(w_), H(H_), W(W_) {
    auto ny = nearest_axis(H, h);
    auto nx = nearest_axis(W, w);
    iy = ny.first.contiguous();
    ix = nx.first.contiguous();
    ry = ny.second.to(dtype).contiguous();
    rx = nx.second.to(dtype).contiguous();
    cell_y = rel_cell(H, h);
    cell_x = rel_cell(W, w);
    by = bilinear_axis(H, h, dtype);
    bx = bilinear_axis(W, w, dtype);
  }
};

}  // namespace pcsr
