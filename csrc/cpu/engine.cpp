// The CPU engine of the pcsr ops (see engine.h).
//
// How the work is split: the LR image is cut into bands of TR LR rows, the unit threads
// take from an atomic counter (the class mix, and so the work, varies across the image),
// and a band into tiles of TC LR columns. The HR pixels whose nearest LR pixel lies in a
// tile form an HR rectangle (the nearest index is monotone along each axis), so the tiles
// partition the HR image exactly. Per band: its LR features are gathered as rows of D
// values (long contiguous reads of each feature plane). Per tile:
//   1. the first-layer LR terms P = W_z z + b0 + W_cell cell of its LR pixels (a small
//      GEMM), for the classifier, and for a branch only once a pixel of the tile needs it;
//   2. classifier: per block of kBlock HR pixels, first layer = P + T_y[y] + T_x[x], the
//      other layers as small GEMMs with bias and ReLU fused, then the routing decision
//      from the logits (or softmax -> probabilities / heavy mass);
//   3. the bilinear base written row by row; a counting sort of the tile's pixels by
//      class; per branch and block of kBlock pixels its MLP, the residual added to sr.
// Everything a tile touches (P of ~100 LR pixels, two activation blocks, the weights)
// stays in L1/L2; no per-pixel input matrix of the image exists.
#include "cpu/engine.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "common/pixel_math.h"
#include "cpu/gemm.h"

namespace pcsr {
namespace cpu {

namespace {

constexpr int64_t kBlock = 64;       // HR pixels per GEMM block
constexpr double kTilePixels = 2048;  // HR pixels per tile (target)
constexpr double kTileCols = 128;     // HR columns per tile (target)
constexpr int kAdmMaxSteps = 20;      // the authors' K-means: at most 20 Lloyd steps ...
constexpr double kAdmTol = 1e-4;      // ... or until the summed squared centre shift <= 1e-4
constexpr int64_t kRefineRows = 32;   // rows per refinement chunk
constexpr int64_t kAdmChunk = 1 << 16;  // values per partial sum of ADM's Lloyd steps
constexpr int64_t kGatherCols = 16;     // LR pixels per block of the feature transpose

template <typename T>
at::ScalarType scalar_type_of() {
  return c10::CppTypeToScalarType<T>::value;
}

}  // namespace

template <typename T>
Packed<T> pack(const std::vector<at::Tensor>& classifier, const std::vector<std::vector<at::Tensor>>& branches,
               int64_t D, const Tables& t) {
  constexpr int64_t L = Vec<T>::L;
  const auto opts = at::TensorOptions().dtype(scalar_type_of<T>());
  Packed<T> pk;
  pk.D = D;
  pk.has_classifier = !classifier.empty();
  std::vector<const std::vector<at::Tensor>*> mlps;
  if (pk.has_classifier) mlps.push_back(&classifier);
  for (const auto& b : branches) mlps.push_back(&b);

  std::vector<int64_t> poff;
  int64_t ptot = 0;
  for (const auto* m : mlps) {
    poff.push_back(ptot);
    ptot += pad_width<T>((*m)[0].size(0));
  }
  pk.ptot = ptot;
  pk.cls_cols = pk.has_classifier ? (mlps.size() > 1 ? poff[1] : ptot) : 0;

  at::Tensor WzT = at::zeros({D, ptot}, opts);   // [D, ptot]
  at::Tensor pbias = at::zeros({ptot}, opts);    // [ptot]
  at::Tensor Ty = at::zeros({t.H, ptot}, opts);  // [H, ptot]
  at::Tensor Tx = at::zeros({t.W, ptot}, opts);  // [W, ptot]
  for (size_t i = 0; i < mlps.size(); ++i) {
    const auto& m = *mlps[i];
    const at::Tensor W0 = m[0].to(at::kCPU, scalar_type_of<T>()).contiguous();  // [n1, D+4]
    const at::Tensor b0 = m[1].to(at::kCPU, scalar_type_of<T>()).contiguous();
    const int64_t n1 = W0.size(0);
    WzT.narrow(1, poff[i], n1).copy_(W0.narrow(1, 0, D).t());
    pbias.narrow(0, poff[i], n1).copy_(b0 + W0.select(1, D + 2) * t.cell_y + W0.select(1, D + 3) * t.cell_x);
    Ty.narrow(1, poff[i], n1).copy_(at::outer(t.ry, W0.select(1, D)));
    Tx.narrow(1, poff[i], n1).copy_(at::outer(t.rx, W0.select(1, D + 1)));

    Head<T> hd;
    hd.n1 = n1;
    hd.n1pad = pad_width<T>(n1);
    hd.poff = poff[i];
    const int64_t nl = static_cast<int64_t>(m.size()) / 2;
    hd.relu1 = nl > 1;
    hd.out = n1;
    pk.maxpad = std::max(pk.maxpad, hd.n1pad);
    for (int64_t l = 1; l < nl; ++l) {
      const at::Tensor Wl = m[2 * l].to(at::kCPU, scalar_type_of<T>());  // [N, K]
      const at::Tensor bl = m[2 * l + 1].to(at::kCPU, scalar_type_of<T>());
      const int64_t N = Wl.size(0), K = Wl.size(1), nvec = (N + L - 1) / L;
      at::Tensor WT = at::zeros({K, nvec * L}, opts);  // [K, Npad]
      WT.narrow(1, 0, N).copy_(Wl.t());
      at::Tensor bp = at::zeros({nvec * L}, opts);
      bp.narrow(0, 0, N).copy_(bl);
      pk.storage.push_back(WT);
      pk.storage.push_back(bp);
      hd.rest.push_back(PackedLayer<T>{K, N, nvec, l < nl - 1, WT.data_ptr<T>(), bp.data_ptr<T>()});
      hd.out = N;
      pk.maxpad = std::max(pk.maxpad, nvec * L);
    }
    pk.heads.push_back(std::move(hd));
  }
  pk.storage.insert(pk.storage.end(), {WzT, pbias, Ty, Tx});
  pk.WzT = WzT.data_ptr<T>();
  pk.pbias = pbias.data_ptr<T>();
  pk.Ty = Ty.data_ptr<T>();
  pk.Tx = Tx.data_ptr<T>();
  return pk;
}

namespace {

// HR index range per LR index: first[r] = first HR position whose nearest LR index is >= r.
std::vector<int64_t> hr_starts(const int64_t* idx, int64_t n_out, int64_t n_in) {
  std::vector<int64_t> first(n_in + 1);
  int64_t y = 0;
  for (int64_t r = 0; r <= n_in; ++r) {
    while (y < n_out && idx[y] < r) ++y;
    first[r] = y;
  }
  first[n_in] = n_out;
  return first;
}

template <typename T>
struct Scratch {
  std::vector<T> A, P, act0, act1, probs, vrow;
  std::vector<int32_t> cls;
  std::vector<int64_t> coords, list, counts;  // tile pixels as (row << 32 | column) in the tile
};

inline int64_t pack_yx(int64_t yy, int64_t xx) { return (yy << 32) | xx; }

}  // namespace

template <typename T>
void run_pass(const at::Tensor& feat, const Tables& t, const Packed<T>& pk, int64_t M, const PassSpec<T>& spec) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  const int64_t B = feat.size(0), D = feat.size(1), h = feat.size(2), w = feat.size(3);
  const int64_t sB = feat.stride(0), sD = feat.stride(1), sH = feat.stride(2), sW = feat.stride(3);
  const int64_t H = t.H, W = t.W;
  const T* F = feat.data_ptr<T>();
  const int64_t* iy = t.iy.data_ptr<int64_t>();
  const int64_t* ix = t.ix.data_ptr<int64_t>();
  const int64_t* by0 = t.by.i0.data_ptr<int64_t>();
  const int64_t* by1 = t.by.i1.data_ptr<int64_t>();
  const T* bly = t.by.lam.data_ptr<T>();
  const int64_t* bx0 = t.bx.i0.data_ptr<int64_t>();
  const int64_t* bx1 = t.bx.i1.data_ptr<int64_t>();
  const T* blx = t.bx.lam.data_ptr<T>();
  const std::vector<int64_t> ys = hr_starts(iy, H, h), xs = hr_starts(ix, W, w);

  // Work unit: a band of TR LR rows of one image; inside it, tiles of TC LR columns with
  // ~kTileCols HR columns and ~kTilePixels HR pixels each.
  const double sx = static_cast<double>(W) / w, sy = static_cast<double>(H) / h;
  const int64_t TC = std::min<int64_t>(w, std::max<int64_t>(1, std::llround(kTileCols / sx)));
  const int64_t TR = std::min<int64_t>(h, std::max<int64_t>(1, std::llround(kTilePixels / (TC * sx * sy))));
  const int64_t ntc = (w + TC - 1) / TC, ntr = (h + TR - 1) / TR;
  int64_t max_rows = 0, max_cols = 0;
  for (int64_t r = 0; r < h; r += TR) max_rows = std::max(max_rows, ys[std::min(h, r + TR)] - ys[r]);
  for (int64_t c = 0; c < w; c += TC) max_cols = std::max(max_cols, xs[std::min(w, c + TC)] - xs[c]);
  const int64_t max_hr = max_rows * max_cols, max_lr = TR * TC;

  const int64_t ptot = pk.ptot;
  const int64_t nbands = B * ntr;
  std::atomic<int64_t> next_band(0);

  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    Scratch<T> s;
    s.A.assign((TR * w + kRowSlack) * D, T(0));
    s.P.assign((max_lr + kRowSlack) * ptot, T(0));
    s.act0.assign((kBlock + kRowSlack) * pk.maxpad, T(0));
    s.act1.assign((kBlock + kRowSlack) * pk.maxpad, T(0));
    s.probs.assign(M, T(0));
    s.vrow.assign(3 * (TC + 2), T(0));
    s.cls.assign(max_hr, 0);
    s.coords.assign(max_hr, 0);
    s.list.assign(max_hr, 0);
    s.counts.assign(M + 1, 0);
    T* A = s.A.data();
    T* P = s.P.data();
    T* act0 = s.act0.data();
    T* act1 = s.act1.data();

    for (;;) {
      const int64_t band = next_band.fetch_add(1, std::memory_order_relaxed);
      if (band >= nbands) break;
      const int64_t b = band / ntr;
      const int64_t r0 = (band % ntr) * TR, r1 = std::min(h, r0 + TR);
      const int64_t y0 = ys[r0], y1 = ys[r1];
      if (y0 >= y1) continue;

      // The band's LR features as rows of D values, [(r1-r0)*w, D]: long contiguous reads
      // of each feature plane (or of each pixel's vector when feat is channels-last).
      const T* Fb = F + b * sB;
      if (sD == 1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = 0; c < w; ++c) std::memcpy(A + ((r - r0) * w + c) * D, Fb + r * sH + c * sW, D * sizeof(T));
      } else {
        // A transpose in blocks of kGatherCols pixels: their D-value rows (a few KB) stay
        // in L1 while every plane contributes one short contiguous read.
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c0b = 0; c0b < w; c0b += kGatherCols) {
            const int64_t nb = std::min(kGatherCols, w - c0b);
            T* dst = A + ((r - r0) * w + c0b) * D;
            const T* src = Fb + r * sH + c0b * sW;
            for (int64_t d = 0; d < D; ++d) {
              const T* row = src + d * sD;
              for (int64_t c = 0; c < nb; ++c) dst[c * D + d] = row[c * sW];
            }
          }
      }

      for (int64_t tc = 0; tc < ntc; ++tc) {
        const int64_t c0 = tc * TC, c1 = std::min(w, c0 + TC);
        const int64_t x0 = xs[c0], x1 = xs[c1];
        if (x0 >= x1) continue;
        const int64_t tcn = c1 - c0, tw = x1 - x0, n = (y1 - y0) * tw;

        // First-layer terms W_z z + b0 + W_cell cell of the tile's LR pixels for the P
        // columns [a, e), one small GEMM per LR row (in row order: each GEMM's rounded-up
        // rows spill into the next row's slots, which that GEMM then overwrites).
        auto lr_terms = [&](int64_t a, int64_t e) {
          for (int64_t r = r0; r < r1; ++r)
            gemm_bias_act<T, false>(A + ((r - r0) * w + c0) * D, D, tcn, D, pk.WzT + a, ptot, pk.pbias + a,
                                    (e - a) / L, P + (r - r0) * tcn * ptot + a, ptot);
        };
        // First layer of head `hd` for the tile pixels ids[0 .. cnt).
        auto first_layer = [&](const Head<T>& hd, const int64_t* ids, int64_t cnt) {
          for (int64_t i = 0; i < cnt; ++i) {
            const int64_t y = y0 + (ids[i] >> 32), x = x0 + (ids[i] & 0xffffffff);
            const T* p = P + ((iy[y] - r0) * tcn + (ix[x] - c0)) * ptot + hd.poff;
            const T* ty = pk.Ty + y * ptot + hd.poff;
            const T* tx = pk.Tx + x * ptot + hd.poff;
            T* a = act0 + i * hd.n1pad;
            for (int64_t o = 0; o < hd.n1pad; o += L) {
              V v = (vload(p + o) + vload(ty + o)) + vload(tx + o);
              vstore(a + o, hd.relu1 ? vrelu<T>(v) : v);
            }
          }
        };
        // The remaining layers; returns the output block and its row stride.
        auto forward = [&](const Head<T>& hd, int64_t rows, int64_t& ld) -> const T* {
          T* in = act0;
          ld = hd.n1pad;
          for (const auto& ly : hd.rest) {
            T* out = in == act0 ? act1 : act0;
            const int64_t ldo = ly.nvec * L;
            if (ly.relu)
              gemm_bias_act<T, true>(in, ld, rows, ly.K, ly.WT, ldo, ly.bias, ly.nvec, out, ldo, ly.N);
            else
              gemm_bias_act<T, false>(in, ld, rows, ly.K, ly.WT, ldo, ly.bias, ly.nvec, out, ldo, ly.N);
            in = out;
            ld = ldo;
          }
          return in;
        };

        int64_t* coords = s.coords.data();
        for (int64_t yy = 0, tp = 0; yy < y1 - y0; ++yy)
          for (int64_t xx = 0; xx < tw; ++xx) coords[tp++] = pack_yx(yy, xx);

        // Classifier.
        if (spec.classify) {
          const Head<T>& hc = pk.classifier();
          lr_terms(hc.poff, hc.poff + hc.n1pad);
          const int nh = static_cast<int>(common::num_heavy(M));
          const bool route_only = spec.klogc && !spec.probs && !spec.heavy;
          for (int64_t st = 0; st < n; st += kBlock) {
            const int64_t cnt = std::min(kBlock, n - st);
            first_layer(hc, coords + st, cnt);
            int64_t ld;
            const T* logits = forward(hc, cnt, ld);
            for (int64_t i = 0; i < cnt; ++i) {
              const int64_t tp = st + i;
              const int64_t pix = (b * H + y0 + (coords[tp] >> 32)) * W + x0 + (coords[tp] & 0xffffffff);
              if (route_only) {
                const int c = common::route_logits(logits + i * ld, spec.klogc, static_cast<int>(M), s.probs.data());
                spec.classes[pix] = c;
                s.cls[tp] = c;
                continue;
              }
              T* p = s.probs.data();
              std::memcpy(p, logits + i * ld, M * sizeof(T));
              common::softmax(p, static_cast<int>(M));
              if (spec.probs) std::memcpy(spec.probs + pix * M, p, M * sizeof(T));
              if (spec.heavy) spec.heavy[pix] = common::heavy_mass(p, nh);
              if (spec.klogc) {
                const int c = common::route_cost_aware(p, spec.klogc, static_cast<int>(M));
                spec.classes[pix] = c;
                s.cls[tp] = c;
              }
            }
          }
        }

        if (!spec.upsample) continue;
        const T* lrb = spec.lr + b * 3 * h * w;
        T* srb = spec.sr + b * 3 * H * W;

        // The bilinear base of the tile, row by row: vertical lerp of the LR columns the
        // row's taps reach (c0-1 .. c1: both tap rules round the same source position),
        // then horizontal; written contiguously, the branches' residuals are added to it
        // below while the lines are still cached.
        {
          int64_t cl = bx0[x0], cr = bx1[x0];
          for (int64_t x = x0; x < x1; ++x) {
            cl = std::min(cl, bx0[x]);
            cr = std::max(cr, bx1[x]);
          }
          const int64_t nc = cr - cl + 1;
          if (static_cast<int64_t>(s.vrow.size()) < 3 * nc) s.vrow.resize(3 * nc);
          T* vrow = s.vrow.data();
          for (int64_t y = y0; y < y1; ++y) {
            const T ly = bly[y], hy = T(1) - ly;
            for (int64_t c = 0; c < 3; ++c) {
              const T* p0 = lrb + (c * h + by0[y]) * w + cl;
              const T* p1 = lrb + (c * h + by1[y]) * w + cl;
              T* vr = vrow + c * nc;
              for (int64_t q = 0; q < nc; ++q) vr[q] = hy * p0[q] + ly * p1[q];
              T* out = srb + (c * H + y) * W;
              for (int64_t x = x0; x < x1; ++x) {
                const T lx = blx[x];
                out[x] = (T(1) - lx) * vr[bx0[x] - cl] + lx * vr[bx1[x] - cl];
              }
            }
          }
        }

        // Branches: counting sort of the tile's pixels by class, then per branch.
        if (!spec.klogc) {
          for (int64_t y = y0; y < y1; ++y) {
            const int64_t* crow = spec.classes + (b * H + y) * W;
            int32_t* dst = s.cls.data() + (y - y0) * tw;
            for (int64_t x = x0; x < x1; ++x) dst[x - x0] = static_cast<int32_t>(crow[x]);
          }
        }
        int64_t* off = s.counts.data();
        std::fill(off, off + M + 1, 0);
        for (int64_t tp = 0; tp < n; ++tp) ++off[s.cls[tp] + 1];
        for (int64_t j = 0; j < M; ++j) off[j + 1] += off[j];
        for (int64_t tp = 0; tp < n; ++tp) s.list[off[s.cls[tp]]++] = coords[tp];
        for (int64_t j = M; j > 0; --j) off[j] = off[j - 1];
        off[0] = 0;

        for (int64_t j = 0; j < M; ++j) {
          if (off[j] == off[j + 1]) continue;
          const Head<T>& hb = pk.branch(j);
          lr_terms(hb.poff, hb.poff + hb.n1pad);  // only for branches present in the tile
          for (int64_t st = off[j]; st < off[j + 1]; st += kBlock) {
            const int64_t cnt = std::min(kBlock, off[j + 1] - st);
            const int64_t* ids = s.list.data() + st;
            first_layer(hb, ids, cnt);
            int64_t ld;
            const T* res = forward(hb, cnt, ld);
            for (int64_t i = 0; i < cnt; ++i) {
              T* o = srb + (y0 + (ids[i] >> 32)) * W + x0 + (ids[i] & 0xffffffff);
              o[0] += res[i * ld];
              o[H * W] += res[i * ld + 1];
              o[2 * H * W] += res[i * ld + 2];
            }
          }
        }
      }
    }
  });
}

namespace {

// ADM's assignment step over v[0, n): per cluster the count and the float64 sum of the
// values nearest to its centre (ties to the lower index); non-finite values take no part.
// MC > 0: M known at compile time, branch-free with the accumulators in registers (adding
// +0 leaves a sum unchanged).
template <typename T, int MC>
void adm_accumulate(const T* v, int64_t n, const T* c, int M, int64_t* cnt, double* sum) {
  if (MC > 0) {
    constexpr int Mc = MC > 0 ? MC : 1;
    T cr[Mc];
    double sr[Mc];
    int64_t nr[Mc];
    for (int j = 0; j < MC; ++j) {
      cr[j] = c[j];
      sr[j] = 0.0;
      nr[j] = 0;
    }
    for (int64_t i = 0; i < n; ++i) {
      const T x = v[i];
      const bool ok = common::is_finite(x);
      const int l = common::adm_nearest(x, cr, MC);
      for (int j = 0; j < MC; ++j) {
        const bool hit = ok && l == j;
        sr[j] += hit ? static_cast<double>(x) : 0.0;
        nr[j] += hit;
      }
    }
    for (int j = 0; j < MC; ++j) {
      sum[j] = sr[j];
      cnt[j] = nr[j];
    }
  } else {
    std::fill(cnt, cnt + M, 0);
    std::fill(sum, sum + M, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      if (!common::is_finite(v[i])) continue;
      const int l = common::adm_nearest(v[i], c, M);
      cnt[l] += 1;
      sum[l] += static_cast<double>(v[i]);
    }
  }
}

// Lloyd steps of one image, as the reference computes them: exact counts, float64 sums,
// each new centre the float64 mean rounded to T once. The sums are formed per chunk of
// kAdmChunk values in parallel and added in chunk order (deterministic, whatever the
// threads): in float64 the order moves a sum by ~1e-16 relative, which the rounding to
// float32 absorbs (for float64 data it could move a centre by one ulp, which flips only a
// value within ~1e-16 of the midpoint between two centres).
template <typename T, int MC>
void lloyd(const T* v, int64_t N, int M, T* c, T* cprev, bool empty_to_zero) {
  const int64_t nchunks = (N + kAdmChunk - 1) / kAdmChunk;
  std::vector<int64_t> pcnt(nchunks * M);
  std::vector<double> psum(nchunks * M);
  std::vector<T> nc(M);
  for (int step = 0; step < kAdmMaxSteps - 1; ++step) {
    at::parallel_for(0, nchunks, 1, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t i0 = q * kAdmChunk, n = std::min(kAdmChunk, N - i0);
        adm_accumulate<T, MC>(v + i0, n, c, M, pcnt.data() + q * M, psum.data() + q * M);
      }
    });
    T shift = T(0);
    for (int j = 0; j < M; ++j) {
      int64_t cnt = 0;
      double sum = 0.0;
      for (int64_t q = 0; q < nchunks; ++q) {
        cnt += pcnt[q * M + j];
        sum += psum[q * M + j];
      }
      nc[j] = cnt > 0 ? static_cast<T>(sum / static_cast<double>(cnt)) : (empty_to_zero ? T(0) : c[j]);
      const T d = nc[j] - c[j];
      shift += d * d;
    }
    for (int j = 0; j < M; ++j) {
      cprev[j] = c[j];
      c[j] = nc[j];
    }
    if (static_cast<double>(shift) <= kAdmTol) break;
  }
}

}  // namespace

template <typename T>
void adm(T* heavy, int64_t B, int64_t N, int64_t M, int64_t* classes) {
  const auto opts = at::TensorOptions().dtype(scalar_type_of<T>());
  const int Mi = static_cast<int>(M);
  std::vector<T> c(M), cprev(M);
  std::vector<int64_t> order(M), rank(M);
  for (int64_t b = 0; b < B; ++b) {
    int64_t* out = classes + b * N;
    // Normalisation and the first centre with the reference's own ATen calls (a float64
    // sum over the finite values, divided by their number, rounded to T). Non-finite values
    // are left out and go to branch 0, as adm_ref; with none, the reference's path exactly.
    at::Tensor v = at::from_blob(heavy + b * N, {N}, opts);
    const at::Tensor finite = at::isfinite(v);
    const int64_t nfin = finite.sum().item<int64_t>();
    const bool all_finite = nfin == N;
    if (nfin == 0) {  // no decision can be made: every pixel to the heaviest branch
      at::parallel_for(0, N, 1 << 16, [&](int64_t i0, int64_t i1) { std::fill(out + i0, out + i1, 0); });
      continue;
    }
    const at::Tensor lo = all_finite ? v.min() : v.masked_fill(finite.logical_not(), INFINITY).min();
    const at::Tensor hi = all_finite ? v.max() : v.masked_fill(finite.logical_not(), -INFINITY).max();
    if (!(hi > lo).item<bool>()) {  // a constant image: every (finite) pixel to the lightest branch
      at::parallel_for(0, N, 1 << 16, [&](int64_t i0, int64_t i1) { std::fill(out + i0, out + i1, M - 1); });
      if (!all_finite) at::from_blob(out, {N}, at::kLong).masked_fill_(finite.logical_not(), 0);
      continue;
    }
    v.sub_(lo).div_(hi.sub(lo));  // non-finite values stay non-finite
    const T* vp = heavy + b * N;
    const bool empty_to_zero = M == 2;
    if (M == 2) {
      const at::Tensor vf = all_finite ? v : v.masked_select(finite);
      c[0] = vf.sum(at::kDouble).div(nfin).to(scalar_type_of<T>()).template item<T>();
      c[1] = T(0);
    } else {
      for (int64_t j = 0; j < M; ++j) c[j] = T(2 * j + 1) / T(2 * M);
    }
    switch (M) {
      case 2: lloyd<T, 2>(vp, N, Mi, c.data(), cprev.data(), empty_to_zero); break;
      case 3: lloyd<T, 3>(vp, N, Mi, c.data(), cprev.data(), empty_to_zero); break;
      case 4: lloyd<T, 4>(vp, N, Mi, c.data(), cprev.data(), empty_to_zero); break;
      default: lloyd<T, 0>(vp, N, Mi, c.data(), cprev.data(), empty_to_zero); break;
    }
    // Clusters ranked by final centre, highest -> branch 0 (stable on ties); the labels are
    // those of the last assignment step, i.e. against the centres before the last update.
    for (int64_t j = 0; j < M; ++j) order[j] = j;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t q) { return c[a] > c[q]; });
    for (int64_t r = 0; r < M; ++r) rank[order[r]] = r;
    at::parallel_for(0, N, 1 << 14, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        out[i] = common::is_finite(vp[i]) ? rank[common::adm_nearest(vp[i], cprev.data(), Mi)] : 0;
    });
  }
}

template <typename T>
void refine_inplace(T* sr, const int64_t* classes, int64_t B, int64_t H, int64_t W, int64_t num_branches) {
  if (H < 3 || W < 3) return;
  const int64_t nh = common::num_heavy(num_branches);
  const int64_t nch = (H - 2 + kRefineRows - 1) / kRefineRows;  // chunks of interior rows per image
  const int64_t plane = H * W;
  // Each chunk reads the unrefined row above and below it, which other chunks modify: copy
  // those first. Inside a chunk a rolling copy keeps the unrefined previous row.
  std::vector<T> edges(B * nch * 2 * 3 * W);
  at::parallel_for(0, B * nch, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t b = q / nch, ya = 1 + (q % nch) * kRefineRows, yb = std::min(H - 1, ya + kRefineRows);
      T* e = edges.data() + q * 6 * W;
      for (int64_t c = 0; c < 3; ++c) {
        std::memcpy(e + c * W, sr + (b * 3 + c) * plane + (ya - 1) * W, W * sizeof(T));
        std::memcpy(e + (3 + c) * W, sr + (b * 3 + c) * plane + yb * W, W * sizeof(T));
      }
    }
  });
  at::parallel_for(0, B * nch, 1, [&](int64_t q0, int64_t q1) {
    std::vector<T> buf(2 * 3 * W);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t b = q / nch, ya = 1 + (q % nch) * kRefineRows, yb = std::min(H - 1, ya + kRefineRows);
      const T* e = edges.data() + q * 6 * W;
      const T* prev[3] = {e, e + W, e + 2 * W};
      T* srb = sr + b * 3 * plane;
      const int64_t* cb = classes + b * plane;
      for (int64_t y = ya; y < yb; ++y) {
        T* cur = buf.data() + ((y - ya) % 2) * 3 * W;
        for (int64_t c = 0; c < 3; ++c) std::memcpy(cur + c * W, srb + c * plane + y * W, W * sizeof(T));
        const T* nxt[3];
        for (int64_t c = 0; c < 3; ++c) nxt[c] = y + 1 < yb ? srb + c * plane + (y + 1) * W : e + (3 + c) * W;
        const int64_t *k0 = cb + (y - 1) * W, *k1 = cb + y * W, *k2 = cb + (y + 1) * W;
        for (int64_t x = 1; x < W - 1; ++x) {
          if (k1[x] < nh || !common::refine_here(k0, k1, k2, x, nh)) continue;
          for (int64_t c = 0; c < 3; ++c) srb[c * plane + y * W + x] = common::mean3x3(prev[c], cur + c * W, nxt[c], x);
        }
        for (int64_t c = 0; c < 3; ++c) prev[c] = cur + c * W;
      }
    }
  });
}

#define PCSR_INSTANTIATE(T)                                                                                       \
  template Packed<T> pack<T>(const std::vector<at::Tensor>&, const std::vector<std::vector<at::Tensor>>&, int64_t, \
                             const Tables&);                                                                      \
  template void run_pass<T>(const at::Tensor&, const Tables&, const Packed<T>&, int64_t, const PassSpec<T>&);     \
  template void adm<T>(T*, int64_t, int64_t, int64_t, int64_t*);                                                  \
  template void refine_inplace<T>(T*, const int64_t*, int64_t, int64_t, int64_t, int64_t);

PCSR_INSTANTIATE(float)
PCSR_INSTANTIATE(double)
#undef PCSR_INSTANTIATE

}  // namespace cpu
}  // namespace pcsr
