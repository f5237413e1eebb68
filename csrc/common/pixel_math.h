#pragma once
// Per-pixel math of the pcsr ops, shared by the CPU kernels (csrc/cpu) and the CUDA kernels
// (csrc/cuda). Everything here is a small inline function on raw pointers; no ATen, no
// torch headers, so the .cu files that include it compile with a bare nvcc.
//
// The arithmetic mirrors pcsr_kernels/reference.py operation by operation where the
// reference's result is a discrete decision (routing, ADM labels, the refinement mask), so
// the same inputs give the same decision; where the result is a float (softmax, bilinear,
// the refinement mean) it follows the same formula, in the same order where cheap.
#include <stdint.h>

#if defined(__CUDACC__)
#define PCSR_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define PCSR_HD inline
#endif

namespace pcsr {
namespace common {

// Branches 0 .. num_heavy(M)-1 are heavy (branch 0 is the heaviest).
PCSR_HD int64_t num_heavy(int64_t M) { return (M + 1) / 2; }

PCSR_HD float pexp(float x) { return expf(x); }
PCSR_HD double pexp(double x) { return exp(x); }
PCSR_HD float plog(float x) { return logf(x); }
PCSR_HD double plog(double x) { return log(x); }
PCSR_HD float pabs(float x) { return fabsf(x); }
PCSR_HD double pabs(double x) { return fabs(x); }

// In-place softmax over M logits (max-subtracted, as torch.softmax).
template <typename T>
PCSR_HD void softmax(T* x, int M) {
  T mx = x[0];
  for (int j = 1; j < M; ++j) mx = x[j] > mx ? x[j] : mx;
  T s = T(0);
  for (int j = 0; j < M; ++j) {
    x[j] = pexp(x[j] - mx);
    s += x[j];
  }
  for (int j = 0; j < M; ++j) x[j] = x[j] / s;
}

// Cost-aware routing of one pixel: argmax_j log(p_j) - klogc_j, first index on ties
// (torch.argmax), +-inf compared as numbers; branch 0 (the heaviest) when a score is NaN,
// as pcsr_kernels.reference.route_ref. klogc_j = k * log(cost_j), computed once per call
// on the host.
template <typename T>
PCSR_HD int route_cost_aware(const T* probs, const T* klogc, int M) {
  int best = 0;
  T bs = plog(probs[0]) - klogc[0];
  if (bs != bs) return 0;
  for (int j = 1; j < M; ++j) {
    T s = plog(probs[j]) - klogc[j];
    if (s != s) return 0;
    if (s > bs) {
      bs = s;
      best = j;
    }
  }
  return best;
}

// The same decision from the logits: log softmax_j = l_j - logsumexp(l), a shift common to
// every branch, so argmax_j log(p_j) - klogc_j = argmax_j l_j - klogc_j, without exp or log.
// That holds while every probability is a normal number in T. Past that (l_max - l_j beyond
// NormalRange) the reference's softmax rounds p_j to a subnormal with few bits, or to 0,
// whose log is -inf, and with a large |k| the cost term can make that branch win or lose
// by far more than rounding (found by tests/test_fuzz.py: k = -1000, logits spread by
// hundreds): such a pixel's probabilities are formed as the reference forms them, in
// `scratch` (M values), and routed by route_cost_aware. Otherwise the decision can differ
// from the reference's only where two scores tie to within rounding.
//
// Non-finite logits: softmax is all NaN when a logit is NaN or +inf or every logit is -inf
// (then mx - mx is not 0), so the reference's scores are NaN and the pixel goes to branch 0;
// a -inf logit next to finite ones is a probability of 0 (score -inf): the softmax path.
template <typename T>
struct NormalRange;
template <>
struct NormalRange<float> {
  static constexpr float value = 80.0f;  // exp(-80) / M stays above FLT_MIN = exp(-87.3) for M < 1000
};
template <>
struct NormalRange<double> {
  static constexpr double value = 700.0;  // exp(-700) / M stays above DBL_MIN = exp(-708.4)
};

template <typename T>
PCSR_HD int route_logits(const T* logits, const T* klogc, int M, T* scratch) {
  // One pass: the shortcut's decision, and what tells whether it may be used.
  T mx = logits[0], mn = logits[0], bs = logits[0] - klogc[0];
  bool nan = bs != bs;  // a NaN logit (or +inf - +inf)
  int best = 0;
  for (int j = 1; j < M; ++j) {
    const T l = logits[j];
    const T s = l - klogc[j];
    nan = nan || s != s;
    mx = l > mx ? l : mx;
    mn = l < mn ? l : mn;
    if (s > bs) {  // first index on ties
      bs = s;
      best = j;
    }
  }
  if (nan || !(mx - mx == T(0))) return 0;
  if (mx - mn > NormalRange<T>::value) {
    for (int j = 0; j < M; ++j) scratch[j] = logits[j];
    softmax(scratch, M);
    return route_cost_aware(scratch, klogc, M);
  }
  return best;
}

// The heavy mass of one pixel: p_0 + ... + p_{nh-1}, summed left to right.
template <typename T>
PCSR_HD T heavy_mass(const T* probs, int nh) {
  T s = probs[0];
  for (int j = 1; j < nh; ++j) s += probs[j];
  return s;
}

// ADM leaves non-finite heavy mass (NaN, +-inf) out of its statistics and sends it to
// branch 0. After the normalisation (finite lo < hi) a value is finite iff x - x == 0.
template <typename T>
PCSR_HD bool is_finite(T x) {
  return x - x == T(0);
}

// ADM: the nearest centre of a normalised value, ties to the lower index (torch.argmin).
template <typename T>
PCSR_HD int adm_nearest(T v, const T* centres, int M) {
  int best = 0;
  T bd = pabs(v - centres[0]);
  for (int j = 1; j < M; ++j) {
    T d = pabs(v - centres[j]);
    if (d < bd) {
      bd = d;
      best = j;
    }
  }
  return best;
}

// Bilinear sample of one LR plane [h, w] at separable taps (F.interpolate, bilinear,
// align_corners=False): (1-ly)*((1-lx)*p00 + lx*p01) + ly*((1-lx)*p10 + lx*p11).
template <typename T>
PCSR_HD T bilinear(const T* plane, int64_t w, int64_t y0, int64_t y1, T ly, int64_t x0, int64_t x1, T lx) {
  const T* r0 = plane + y0 * w;
  const T* r1 = plane + y1 * w;
  const T hx0 = T(1) - lx;
  const T a = hx0 * r0[x0] + lx * r0[x1];
  const T b = hx0 * r1[x0] + lx * r1[x1];
  return (T(1) - ly) * a + ly * b;
}

// Refinement mask of one interior pixel (y, x): light, and a heavy pixel in its 3x3
// neighbourhood. c0, c1, c2: the class rows y-1, y, y+1 of the image.
PCSR_HD bool refine_here(const int64_t* c0, const int64_t* c1, const int64_t* c2, int64_t x, int64_t nh) {
  if (c1[x] < nh) return false;
  bool near = false;
  for (int64_t dx = -1; dx <= 1; ++dx) {
    near = near || (c0[x + dx] < nh) || (c1[x + dx] < nh) || (c2[x + dx] < nh);
  }
  return near;
}

// Mean of the 3x3 window at column x of three rows (F.avg_pool2d order: row-major sum, /9).
template <typename T>
PCSR_HD T mean3x3(const T* r0, const T* r1, const T* r2, int64_t x) {
  T s = T(0);
  s += r0[x - 1];
  s += r0[x];
  s += r0[x + 1];
  s += r1[x - 1];
  s += r1[x];
  s += r1[x + 1];
  s += r2[x - 1];
  s += r2[x];
  s += r2[x + 1];
  return s / T(9);
}

}  // namespace common
}  // namespace pcsr
