#pragma once
// Argument handling shared by the pcsr_cpu op files.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "common/checks.h"

namespace pcsr {
namespace cpu {

inline void check_cpu(const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "pcsr cpu backend: ", name, " must be a CPU tensor, got ", fmt(t));
}

// Validates the upsampler branches against feat and returns them split, one list per branch.
inline std::vector<std::vector<at::Tensor>> checked_branches(at::TensorList upsamplers, at::IntArrayRef depths,
                                                             const at::Tensor& feat) {
  auto branches = split_branches(upsamplers, depths);
  for (size_t j = 0; j < branches.size(); ++j) {
    check_mlp("upsamplers (branch " + std::to_string(j) + ")", branches[j], feat.size(1) + 4, 3, feat);
  }
  return branches;
}

}  // namespace cpu
}  // namespace pcsr
