#pragma once
// The operator schemas of torch.ops.pcsr, read from pcsr_kernels/schemas.def (the one
// place they are written; Python reads the same file when this extension is not built).
namespace pcsr {

#define PCSR_SCHEMA(schema) schema,
inline constexpr const char* kSchemas[] = {
#include "../pcsr_kernels/schemas.def"
};
#undef PCSR_SCHEMA

}  // namespace pcsr
