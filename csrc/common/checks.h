#pragma once
// Host side (ATen): argument checks of the compiled pcsr kernels, the C++ twin of
// pcsr_kernels/validate.py. Value errors raise Python ValueError (PCSR_CHECK_VALUE), a
// wrong type TypeError, each message naming the argument and printing the sizes.
#include <ATen/ATen.h>

#include <cctype>
#include <cstdio>
#include <type_traits>
#include <cmath>
#include <string>
#include <vector>

namespace pcsr {

// Error messages are assembled here into one std::string, never by streaming numbers
// through c10::str's std::ostringstream. On the GPU machine this project is tested on
// (torch 2.11.0+cu130 wheel, gcc 13.3), any extension -- a five-line load_inline one
// included -- segfaults when TORCH_CHECK's message streams an integer, while a message
// that is already one string raises normally; PCSR_CHECK_* pass exactly one string.
namespace detail {
inline std::string piece(const char* s) { return s; }
inline std::string piece(const std::string& s) { return s; }
inline std::string piece(char c) { return std::string(1, c); }
inline std::string piece(bool b) { return b ? "1" : "0"; }  // as std::ostream prints it
template <class T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
inline std::string piece(T v) { return std::to_string(v); }
inline std::string piece(double v) {  // std::ostream's default: %g, precision 6
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
inline std::string piece(float v) { return piece(static_cast<double>(v)); }
inline std::string piece(const c10::Device& d) { return d.str(); }
inline std::string piece(c10::ScalarType t) { return c10::toString(t); }
inline std::string piece(c10::ArrayRef<int64_t> a) {  // as c10's operator<<: [1, 2]
  std::string s = "[";
  for (size_t i = 0; i < a.size(); ++i) s += (i ? ", " : "") + std::to_string(a[i]);
  return s + "]";
}
inline std::string piece(const at::Tensor& t) {  // the values of a small tensor: [-2, 1]
  const at::Tensor v = t.detach().to(at::kCPU, at::kDouble).contiguous().view(-1);
  const double* p = v.data_ptr<double>();
  std::string s = "[";
  for (int64_t i = 0; i < v.numel(); ++i) s += (i ? ", " : "") + piece(p[i]);
  return s + "]";
}
template <class... A>
inline std::string msg(const A&... a) {
  std::string s;
  (s += ... += piece(a));
  return s;
}
}  // namespace detail

#define PCSR_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, ::pcsr::detail::msg(__VA_ARGS__))
#define PCSR_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, ::pcsr::detail::msg(__VA_ARGS__))

// A shape as Python prints tuple(t.shape): (2, 9, 13), (3,), ().
inline std::string shape(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  if (t.dim() == 1) s += ",";
  return s + ")";
}

// A dtype as Python prints it without "torch.": float32, int64.
inline std::string dtype_name(c10::ScalarType st) {
  std::string dt = c10::toString(st);
  for (auto& c : dt) c = static_cast<char>(std::tolower(c));
  const char* names[][2] = {{"float", "float32"}, {"double", "float64"}, {"half", "float16"},
                            {"bfloat16", "bfloat16"}, {"long", "int64"}, {"int", "int32"}};
  for (auto& n : names)
    if (dt == n[0]) dt = n[1];
  return dt;
}

// Shape, dtype and device, as validate.py's _fmt: (2, 9, 13) float32 on cpu.
inline std::string fmt(const at::Tensor& t) { return shape(t) + " " + dtype_name(t.scalar_type()) + " on " + t.device().str(); }

inline void check_tensor(const char* name, const at::Tensor& t, int64_t ndim) {
  PCSR_CHECK_VALUE(t.defined(), name, " is an undefined tensor");
  PCSR_CHECK_VALUE(t.dim() == ndim, name, " must have ", ndim, " dimensions, got shape ", shape(t));
}

// The dtypes the compiled kernels implement; other floating dtypes work with the reference.
inline void check_kernel_dtype(const char* backend, const at::Tensor& feat) {
  const auto st = feat.scalar_type();
  PCSR_CHECK_TYPE(st == at::kFloat || st == at::kDouble, "pcsr ", backend, " backend: dtype ",
                   c10::toString(st), " of ", fmt(feat),
                   " is not supported (float32 or float64); use the reference backend for it");
}

inline void check_like(const char* name, const at::Tensor& t, const at::Tensor& feat) {
  PCSR_CHECK_VALUE(t.scalar_type() == feat.scalar_type(), name, " must be ", dtype_name(feat.scalar_type()),
                    " (as feat), got ", fmt(t));
  PCSR_CHECK_VALUE(t.device() == feat.device(), name, " must be on ", feat.device(), " (as feat), got ", fmt(t));
}

// feat [B, D, h, w], non-empty.
inline void check_feat(const at::Tensor& feat) {
  check_tensor("feat", feat, 4);
  PCSR_CHECK_VALUE(feat.is_floating_point(), "feat must be floating point, got ", fmt(feat));
  PCSR_CHECK_VALUE(feat.numel() > 0, "feat is empty: shape ", shape(feat),
                    " (expected [B, D, h, w] with every size > 0)");
}

inline void check_lr(const at::Tensor& lr, const at::Tensor& feat) {
  check_tensor("lr", lr, 4);
  check_like("lr", lr, feat);
  PCSR_CHECK_VALUE(lr.size(0) == feat.size(0) && lr.size(1) == 3 && lr.size(2) == feat.size(2) &&
                        lr.size(3) == feat.size(3),
                    "lr must be [B, 3, h, w] = [", feat.size(0), ", 3, ", feat.size(2), ", ", feat.size(3),
                    "] to match feat ", shape(feat), ", got ", shape(lr));
}

inline std::pair<int64_t, int64_t> check_out_size(at::IntArrayRef out_size) {
  PCSR_CHECK_VALUE(out_size.size() == 2, "out_size must be (H, W), got ", out_size);
  PCSR_CHECK_VALUE(out_size[0] > 0 && out_size[1] > 0, "out_size must be positive, got (H, W) = (", out_size[0],
                    ", ", out_size[1], ")");
  return {out_size[0], out_size[1]};
}

// A flat [W0, b0, W1, b1, ...] list in nn.Linear layout whose widths chain. Returns the
// widths [in, h1, ..., out]; out_dim < 0: any output width.
inline std::vector<int64_t> check_mlp(const std::string& name, at::TensorList params, int64_t in_dim,
                                      int64_t out_dim, const at::Tensor& feat) {
  PCSR_CHECK_VALUE(!params.empty() && params.size() % 2 == 0, name,
                    " must be a flat list [W0, b0, W1, b1, ...] of nn.Linear pairs, got ", params.size(), " tensors");
  std::vector<int64_t> widths{in_dim};
  for (size_t i = 0; i < params.size(); i += 2) {
    const at::Tensor& Wt = params[i];
    const at::Tensor& b = params[i + 1];
    const std::string wn = name + "[" + std::to_string(i) + "] (weight of layer " + std::to_string(i / 2) + ")";
    const std::string bn = name + "[" + std::to_string(i + 1) + "] (bias of layer " + std::to_string(i / 2) + ")";
    check_tensor(wn.c_str(), Wt, 2);
    check_like(wn.c_str(), Wt, feat);
    check_tensor(bn.c_str(), b, 1);
    check_like(bn.c_str(), b, feat);
    PCSR_CHECK_VALUE(Wt.size(1) == widths.back(), name, ": layer ", i / 2, " weight has shape ", shape(Wt),
                      " but its input width must be ", (i == 0 ? "D+4" : "the previous layer's output width"),
                      " = ", widths.back());
    PCSR_CHECK_VALUE(b.size(0) == Wt.size(0), name, ": layer ", i / 2, " bias has shape ", shape(b), ", weight ",
                      shape(Wt), ": widths do not match");
    PCSR_CHECK_VALUE(Wt.size(0) > 0, name, ": layer ", i / 2, " has no outputs, weight ", shape(Wt));
    widths.push_back(Wt.size(0));
  }
  if (out_dim >= 0) {
    PCSR_CHECK_VALUE(widths.back() == out_dim, name, ": last layer outputs ", widths.back(), " values, expected ",
                      out_dim);
  }
  return widths;
}

// Cut the flat list of every branch's [W, b] pairs into one list per branch.
inline std::vector<std::vector<at::Tensor>> split_branches(at::TensorList upsamplers, at::IntArrayRef depths) {
  PCSR_CHECK_VALUE(depths.size() >= 2, "depths must name at least 2 branches (M >= 2), got depths=", depths);
  int64_t need = 0;
  for (size_t j = 0; j < depths.size(); ++j) {
    PCSR_CHECK_VALUE(depths[j] >= 1, "depths[", j, "] = ", depths[j],
                      ": every branch needs at least one Linear layer");
    need += 2 * depths[j];
  }
  PCSR_CHECK_VALUE(static_cast<int64_t>(upsamplers.size()) == need, "upsamplers holds ", upsamplers.size(),
                    " tensors but depths=", depths, " needs 2*sum(depths) = ", need);
  std::vector<std::vector<at::Tensor>> out;
  size_t at_ = 0;
  for (int64_t d : depths) {
    out.emplace_back(upsamplers.begin() + at_, upsamplers.begin() + at_ + 2 * d);
    at_ += 2 * d;
  }
  return out;
}

inline void check_cost(const at::Tensor& cost, int64_t M, const at::Device& device) {
  check_tensor("cost", cost, 1);
  PCSR_CHECK_VALUE(cost.device() == device, "cost must be on ", device, " (as feat), got ", fmt(cost));
  PCSR_CHECK_VALUE(cost.size(0) == M, "cost must have one entry per branch: M = ", M, ", got shape ", shape(cost));
  PCSR_CHECK_VALUE(cost.is_floating_point(), "cost must be floating point, got ", fmt(cost));
  PCSR_CHECK_VALUE(at::isfinite(cost).all().item<bool>() && (cost > 0).all().item<bool>(),
                    "cost entries must be finite and > 0, got ", cost);
}

inline void check_k(double k) { PCSR_CHECK_VALUE(std::isfinite(k), "k must be finite, got ", k); }

inline void check_classes(const at::Tensor& classes, int64_t B, int64_t H, int64_t W, int64_t M,
                          const at::Device& device) {
  check_tensor("classes", classes, 3);
  PCSR_CHECK_VALUE(classes.scalar_type() == at::kLong, "classes must be int64, got ", fmt(classes));
  PCSR_CHECK_VALUE(classes.device() == device, "classes must be on ", device, " (as feat), got ", fmt(classes));
  PCSR_CHECK_VALUE(classes.size(0) == B && classes.size(1) == H && classes.size(2) == W,
                    "classes must be [B, H, W] = [", B, ", ", H, ", ", W, "], got ", shape(classes));
  if (classes.numel()) {
    auto mm = at::aminmax(classes);
    const int64_t lo = std::get<0>(mm).item<int64_t>();
    const int64_t hi = std::get<1>(mm).item<int64_t>();
    PCSR_CHECK_VALUE(lo >= 0 && hi < M, "classes must lie in [0, M) = [0, ", M, "), got values in [", lo, ", ",
                      hi, "]");
  }
}

// k * log(cost) in the probabilities' dtype, as the reference computes it.
inline at::Tensor k_log_cost(const at::Tensor& cost, double k, at::ScalarType dtype) {
  return at::log(cost.to(dtype)).mul(k);
}

}  // namespace pcsr
