#pragma once
// Small GEMMs with bias and ReLU fused, for the MLP layers of a tile of pixels.
//
// C[rows, N] = act(A[rows, K] . WT[K, N] + bias[N]), all row-major. WT is the nn.Linear
// weight transposed and its columns padded with zeros to a multiple of the vector length
// L, so every output vector is a full SIMD register and padded outputs come out as
// act(0) = 0. The microkernel holds an MR x NV block of C in registers (MR pixels x NV
// vectors of outputs) and walks K once: per k it loads NV weight vectors and broadcasts
// MR activations -- MR*NV fused multiply-adds per MR+NV loads. With AVX2 (16 registers)
// MR x NV = 6x2 and 8x1 keep 8-12 accumulators in flight, enough to cover the FMA latency
// on two FMA ports, and leave registers for the weight vectors (4x3 does not: the compiler
// then folds a weight load into every FMA and the kernel becomes load-bound).
//
// Rows are processed in blocks of MR, rounded up: callers give buffers with at least
// kRowSlack rows beyond `rows`; the extra rows compute garbage that is never read.
#include <stdint.h>
#include <string.h>

#if defined(__AVX__)
#include <immintrin.h>
#define PCSR_VEC_BYTES 32
#else
#define PCSR_VEC_BYTES 16
#endif

namespace pcsr {
namespace cpu {

constexpr int kRowSlack = 8;  // the largest MR

// SIMD vectors of `Bytes` bytes (GCC/Clang vector extensions): the full width, and 16
// bytes for layers with few outputs (the final 3 RGB values, a few logits), which would
// waste most of a full vector.
template <typename T, int Bytes = PCSR_VEC_BYTES>
struct Vec {
  typedef T type __attribute__((vector_size(Bytes)));
  static constexpr int L = Bytes / sizeof(T);
};

template <typename VT, typename T>
inline VT vload_t(const T* p) {
  VT v;
  memcpy(&v, p, sizeof(v));
  return v;
}

template <typename VT, typename T>
inline void vstore_t(T* p, VT v) {
  memcpy(p, &v, sizeof(v));
}

template <typename T>
inline typename Vec<T>::type vload(const T* p) {
  return vload_t<typename Vec<T>::type>(p);
}

template <typename T>
inline void vstore(T* p, typename Vec<T>::type v) {
  vstore_t<typename Vec<T>::type>(p, v);
}

// One scalar into every lane, straight from memory (vbroadcastss: one load, no ALU op).
template <typename VT>
inline VT vbroadcast(const float* p);
template <typename VT>
inline VT vbroadcast(const double* p);

template <>
inline Vec<float, 16>::type vbroadcast<Vec<float, 16>::type>(const float* p) {
#if defined(__AVX__)
  return (Vec<float, 16>::type)_mm_broadcast_ss(p);
#else
  const float s = *p;
  return Vec<float, 16>::type{s, s, s, s};
#endif
}

template <>
inline Vec<double, 16>::type vbroadcast<Vec<double, 16>::type>(const double* p) {
  const double s = *p;
  return Vec<double, 16>::type{s, s};
}

#if PCSR_VEC_BYTES == 32
template <>
inline Vec<float, 32>::type vbroadcast<Vec<float, 32>::type>(const float* p) {
  return (Vec<float, 32>::type)_mm256_broadcast_ss(p);
}

template <>
inline Vec<double, 32>::type vbroadcast<Vec<double, 32>::type>(const double* p) {
  return (Vec<double, 32>::type)_mm256_broadcast_sd(p);
}
#endif

// a * b + c, one rounding where the machine has FMA (the build does not contract a*b+c on
// its own: -ffp-contract=off keeps the routing arithmetic identical to the reference's).
inline Vec<float, 16>::type vfma(Vec<float, 16>::type a, Vec<float, 16>::type b, Vec<float, 16>::type c) {
#if defined(__FMA__)
  return (Vec<float, 16>::type)_mm_fmadd_ps((__m128)a, (__m128)b, (__m128)c);
#else
  return a * b + c;
#endif
}

inline Vec<double, 16>::type vfma(Vec<double, 16>::type a, Vec<double, 16>::type b, Vec<double, 16>::type c) {
#if defined(__FMA__)
  return (Vec<double, 16>::type)_mm_fmadd_pd((__m128d)a, (__m128d)b, (__m128d)c);
#else
  return a * b + c;
#endif
}

#if PCSR_VEC_BYTES == 32
inline Vec<float, 32>::type vfma(Vec<float, 32>::type a, Vec<float, 32>::type b, Vec<float, 32>::type c) {
#if defined(__FMA__)
  return (Vec<float, 32>::type)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

inline Vec<double, 32>::type vfma(Vec<double, 32>::type a, Vec<double, 32>::type b, Vec<double, 32>::type c) {
#if defined(__FMA__)
  return (Vec<double, 32>::type)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
  return a * b + c;
#endif
}
#endif

// ReLU that keeps NaN, as torch.relu: `z > v ? z : v` is false for a NaN v and returns it
// (one vmaxps with the operands in this order; `v > z ? v : z` would turn NaN into 0 and
// hide a broken input or weight behind a plausible image).
template <typename VT>
inline VT vrelu_t(VT v) {
  VT z = {};
  return z > v ? z : v;
}

template <typename T>
inline typename Vec<T>::type vrelu(typename Vec<T>::type v) {
  return vrelu_t(v);
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

template <typename T>
inline int64_t pad_width(int64_t n) {
  return round_up(n, Vec<T>::L);
}

// The microkernels: one block of C with every accumulator a named local (an array of
// vectors, even fully unrolled, is not reliably kept in registers: GCC 12 mirrored it to
// the stack on every k, which halved the throughput). Not inlined, so that the caller's
// loop-invariant vectors do not take registers from them.

// 6 rows x 2 vectors: 12 accumulators, 2 weight loads + 6 broadcasts per 12 FMAs.
template <typename T, int Bytes, bool RELU>
__attribute__((noinline)) void microkernel_6x2(const T* __restrict__ A, int64_t lda, int64_t K,
                                               const T* __restrict__ WT, int64_t ldw, const T* __restrict__ bias,
                                               T* __restrict__ C, int64_t ldc) {
  using V = typename Vec<T, Bytes>::type;
  constexpr int L = Vec<T, Bytes>::L;
  const V b0 = vload_t<V>(bias), b1 = vload_t<V>(bias + L);
  V c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1;
  V c30 = b0, c31 = b1, c40 = b0, c41 = b1, c50 = b0, c51 = b1;
  const T *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda, *a4 = A + 4 * lda, *a5 = A + 5 * lda;
  for (int64_t k = 0; k < K; ++k) {
    const V w0 = vload_t<V>(WT + k * ldw), w1 = vload_t<V>(WT + k * ldw + L);
    V x;
    x = vbroadcast<V>(a0 + k);
    c00 = vfma(x, w0, c00);
    c01 = vfma(x, w1, c01);
    x = vbroadcast<V>(a1 + k);
    c10 = vfma(x, w0, c10);
    c11 = vfma(x, w1, c11);
    x = vbroadcast<V>(a2 + k);
    c20 = vfma(x, w0, c20);
    c21 = vfma(x, w1, c21);
    x = vbroadcast<V>(a3 + k);
    c30 = vfma(x, w0, c30);
    c31 = vfma(x, w1, c31);
    x = vbroadcast<V>(a4 + k);
    c40 = vfma(x, w0, c40);
    c41 = vfma(x, w1, c41);
    x = vbroadcast<V>(a5 + k);
    c50 = vfma(x, w0, c50);
    c51 = vfma(x, w1, c51);
  }
  auto out = [&](int r, V v0, V v1) {
    vstore_t<V>(C + r * ldc, RELU ? vrelu_t(v0) : v0);
    vstore_t<V>(C + r * ldc + L, RELU ? vrelu_t(v1) : v1);
  };
  out(0, c00, c01);
  out(1, c10, c11);
  out(2, c20, c21);
  out(3, c30, c31);
  out(4, c40, c41);
  out(5, c50, c51);
}

// 8 rows x 1 vector: 8 accumulators (a lone output vector; the final RGB layer).
template <typename T, int Bytes, bool RELU>
__attribute__((noinline)) void microkernel_8x1(const T* __restrict__ A, int64_t lda, int64_t K,
                                               const T* __restrict__ WT, int64_t ldw, const T* __restrict__ bias,
                                               T* __restrict__ C, int64_t ldc) {
  using V = typename Vec<T, Bytes>::type;
  const V b0 = vload_t<V>(bias);
  V c0 = b0, c1 = b0, c2 = b0, c3 = b0, c4 = b0, c5 = b0, c6 = b0, c7 = b0;
  const T *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda;
  const T *a4 = A + 4 * lda, *a5 = A + 5 * lda, *a6 = A + 6 * lda, *a7 = A + 7 * lda;
  for (int64_t k = 0; k < K; ++k) {
    const V w0 = vload_t<V>(WT + k * ldw);
    c0 = vfma(vbroadcast<V>(a0 + k), w0, c0);
    c1 = vfma(vbroadcast<V>(a1 + k), w0, c1);
    c2 = vfma(vbroadcast<V>(a2 + k), w0, c2);
    c3 = vfma(vbroadcast<V>(a3 + k), w0, c3);
    c4 = vfma(vbroadcast<V>(a4 + k), w0, c4);
    c5 = vfma(vbroadcast<V>(a5 + k), w0, c5);
    c6 = vfma(vbroadcast<V>(a6 + k), w0, c6);
    c7 = vfma(vbroadcast<V>(a7 + k), w0, c7);
  }
  const V cs[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
  for (int r = 0; r < 8; ++r) vstore_t<V>(C + r * ldc, RELU ? vrelu_t(cs[r]) : cs[r]);
}

template <typename T, int Bytes, int MR, bool RELU, typename Kernel>
inline void row_blocks(Kernel kernel, const T* A, int64_t lda, int64_t rows, int64_t K, const T* WT, int64_t ldw,
                       const T* bias, T* C, int64_t ldc) {
  for (int64_t r = 0; r < rows; r += MR) kernel(A + r * lda, lda, K, WT, ldw, bias, C + r * ldc, ldc);
}

// C[rows, nvec*L] = act(A[rows, K] . WT[K, nvec*L] + bias). Columns go in pairs of vectors
// (MR = 6: 12 accumulators, 2 weight loads + 6 broadcasts per 12 FMAs, FMA-bound; measured
// 84-88 GFLOP/s on 58- and 74-wide layers on one Zen core against 69-74 for 4 x 3 blocks,
// which leave no register for the weights), an odd one alone (MR = 8). When the layer has
// at most half a vector of real outputs (n_real), one half-width vector covers them (only
// those columns of C are written).
template <typename T, bool RELU>
inline void gemm_bias_act(const T* A, int64_t lda, int64_t rows, int64_t K, const T* WT, int64_t ldw,
                          const T* bias, int64_t nvec, T* C, int64_t ldc, int64_t n_real = -1) {
  constexpr int L = Vec<T>::L;
  constexpr int B = PCSR_VEC_BYTES;
#if PCSR_VEC_BYTES == 32
  if (nvec == 1 && n_real >= 0 && n_real * static_cast<int64_t>(sizeof(T)) <= 16) {
    row_blocks<T, 16, 8, RELU>(microkernel_8x1<T, 16, RELU>, A, lda, rows, K, WT, ldw, bias, C, ldc);
    return;
  }
#endif
  int64_t v = 0;
  for (; v + 2 <= nvec; v += 2)
    row_blocks<T, B, 6, RELU>(microkernel_6x2<T, B, RELU>, A, lda, rows, K, WT + v * L, ldw, bias + v * L, C + v * L,
                              ldc);
  if (v < nvec)
    row_blocks<T, B, 8, RELU>(microkernel_8x1<T, B, RELU>, A, lda, rows, K, WT + v * L, ldw, bias + v * L, C + v * L,
                              ldc);
}

}  // namespace cpu
}  // namespace pcsr
