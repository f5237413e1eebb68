#pragma once
// Argument handling shared by the CPU kernels of the pcsr ops (csrc/cpu/<op>.cpp).
#include <ATen/ATen.h>

#include "common/checks.h"
#include "common/op_args.h"

namespace pcsr {
namespace cpu {

inline void check_cpu(const char* name, const at::Tensor& t) {
  PCSR_CHECK_VALUE(t.device().is_cpu(), "pcsr cpu backend: ", name, " must be a CPU tensor, got ", fmt(t));
}

// The CPU backend's part of the per-op checks (common/op_args.h): no limit on the branches.
constexpr BackendChecks kCpuChecks{"cpu", &check_cpu, -1};

}  // namespace cpu
}  // namespace pcsr
