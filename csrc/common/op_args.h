#pragma once
// Host side (ATen): every op's argument checks, one function per op, called by both the
// CPU glue (csrc/cpu/<op>.cpp) and the CUDA glue (csrc/cuda/register_cuda.cpp) so the two
// backends raise the same errors in the same order. What differs between them (the
// device a tensor must be on, the most branches the kernels take) comes in a
// BackendChecks; the checks each backend adds after these stay in its glue.
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/checks.h"

namespace pcsr {

struct BackendChecks {
  const char* name;                                             // "cpu", "cuda": named in the errors
  void (*check_device)(const char* name, const at::Tensor& t);  // t is on this backend's device
  int64_t max_branches;                                         // the kernels' limit on M; < 0: none
};

// Sizes read off the checked arguments; an op leaves those it has no use for at 0.
struct OpArgs {
  int64_t B = 0, D = 0, h = 0, w = 0;               // feat [B, D, h, w]; sr, probs: B only
  int64_t H = 0, W = 0, M = 0;                      // output [.., H, W], branches
  std::vector<std::vector<at::Tensor>> branches{};  // upsamplers split per branch
};

// precision (route_upsample, upsample): a speed/accuracy knob of the Triton backend's
// upsampler MLPs (pcsr_kernels/precision.py). The compiled backends check the name, as every
// backend does, and compute exactly whatever it says.
inline void check_precision(const std::optional<c10::string_view>& precision) {
  if (!precision.has_value()) return;
  std::string p(precision->data(), precision->size());
  const auto b = p.find_first_not_of(" \t\n"), e = p.find_last_not_of(" \t\n");
  std::string key = b == std::string::npos ? std::string() : p.substr(b, e - b + 1);
  for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* name : {"ieee", "tf32x3", "tf32", "bf16"})
    if (key == name) return;
  PCSR_CHECK_VALUE(false, "precision must be one of ieee, tf32x3, tf32, bf16, got '", p, "'");
}

inline void check_branch_limit(const BackendChecks& be, int64_t M) {
  if (be.max_branches < 0) return;
  PCSR_CHECK_VALUE(M <= be.max_branches, "pcsr ", be.name, " backend: at most ", be.max_branches,
                    " branches are supported, got ", M);
}

// feat: [B, D, h, w], non-empty, on the backend's device, in a dtype its kernels implement.
inline OpArgs feat_args(const BackendChecks& be, const at::Tensor& feat) {
  check_feat(feat);
  be.check_device("feat", feat);
  check_kernel_dtype(be.name, feat);
  return OpArgs{feat.size(0), feat.size(1), feat.size(2), feat.size(3)};  // B, D, h, w
}

// Splits the upsamplers per branch (checking their count against depths and the backend's limit).
inline std::vector<std::vector<at::Tensor>> split_checked(const BackendChecks& be, at::TensorList upsamplers,
                                                          at::IntArrayRef depths) {
  auto branches = split_branches(upsamplers, depths);
  check_branch_limit(be, static_cast<int64_t>(branches.size()));
  return branches;
}

// Every branch: D+4 inputs (feat's D), 3 outputs, feat's dtype and device.
inline void check_branch_mlps(const std::vector<std::vector<at::Tensor>>& branches, const at::Tensor& feat) {
  for (size_t j = 0; j < branches.size(); ++j)
    check_mlp("upsamplers (branch " + std::to_string(j) + ")", branches[j], feat.size(1) + 4, 3, feat);
}

// Validates the upsampler branches against feat and returns them split, one list per branch.
inline std::vector<std::vector<at::Tensor>> checked_branches(const BackendChecks& be, at::TensorList upsamplers,
                                                             at::IntArrayRef depths, const at::Tensor& feat) {
  auto branches = split_checked(be, upsamplers, depths);
  check_branch_mlps(branches, feat);
  return branches;
}

inline OpArgs route_upsample_args(const BackendChecks& be, const at::Tensor& feat, const at::Tensor& lr,
                                  at::IntArrayRef out_size, at::TensorList classifier, at::TensorList upsamplers,
                                  at::IntArrayRef depths, const at::Tensor& cost, double k) {
  OpArgs a = feat_args(be, feat);
  check_lr(lr, feat);
  std::tie(a.H, a.W) = check_out_size(out_size);
  // The order of validate.route_upsample_args: the split, the classifier, then every branch.
  a.branches = split_checked(be, upsamplers, depths);
  a.M = static_cast<int64_t>(depths.size());
  check_mlp("classifier", classifier, a.D + 4, a.M, feat);
  check_branch_mlps(a.branches, feat);
  check_cost(cost, a.M, feat.device());
  check_k(k);
  return a;
}

// M: the classifier's output width.
inline OpArgs classify_args(const BackendChecks& be, const at::Tensor& feat, at::IntArrayRef out_size,
                            at::TensorList classifier) {
  OpArgs a = feat_args(be, feat);
  std::tie(a.H, a.W) = check_out_size(out_size);
  a.M = check_mlp("classifier", classifier, a.D + 4, -1, feat).back();
  return a;
}

// probs [B, H, W, M].
inline OpArgs route_args(const BackendChecks& be, const at::Tensor& probs, const at::Tensor& cost, double k) {
  check_tensor("probs", probs, 4);
  be.check_device("probs", probs);
  PCSR_CHECK_VALUE(probs.is_floating_point(), "probs must be floating point, got ", fmt(probs));
  check_kernel_dtype(be.name, probs);
  OpArgs a;
  a.B = probs.size(0);
  a.H = probs.size(1);
  a.W = probs.size(2);
  a.M = probs.size(3);
  PCSR_CHECK_VALUE(a.M >= 2, "probs must have M >= 2 branches in its last dimension, got shape ", shape(probs));
  check_branch_limit(be, a.M);
  check_cost(cost, a.M, probs.device());
  check_k(k);
  return a;
}

// H, W: from classes [B, H, W].
inline OpArgs upsample_args(const BackendChecks& be, const at::Tensor& feat, const at::Tensor& lr,
                            const at::Tensor& classes, at::TensorList upsamplers, at::IntArrayRef depths) {
  OpArgs a = feat_args(be, feat);
  check_lr(lr, feat);
  a.branches = checked_branches(be, upsamplers, depths, feat);
  a.M = static_cast<int64_t>(depths.size());
  check_tensor("classes", classes, 3);
  a.H = classes.size(1);
  a.W = classes.size(2);
  PCSR_CHECK_VALUE(a.H > 0 && a.W > 0, "classes must be [B, H, W] with H, W > 0, got ", shape(classes));
  check_classes(classes, a.B, a.H, a.W, a.M, feat.device());
  return a;
}

// sr [B, 3, H, W]; M = num_branches (no branch limit: refine runs no MLP).
inline OpArgs refine_args(const BackendChecks& be, const at::Tensor& sr, const at::Tensor& classes,
                          int64_t num_branches) {
  check_tensor("sr", sr, 4);
  be.check_device("sr", sr);
  PCSR_CHECK_VALUE(sr.size(1) == 3, "sr must be [B, 3, H, W], got ", shape(sr));
  PCSR_CHECK_VALUE(sr.is_floating_point(), "sr must be floating point, got ", fmt(sr));
  check_kernel_dtype(be.name, sr);
  PCSR_CHECK_VALUE(num_branches >= 2, "num_branches must be >= 2, got ", num_branches);
  OpArgs a;
  a.B = sr.size(0);
  a.H = sr.size(2);
  a.W = sr.size(3);
  a.M = num_branches;
  check_classes(classes, a.B, a.H, a.W, num_branches, sr.device());
  return a;
}

}  // namespace pcsr
