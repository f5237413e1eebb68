// upscale: pcsr's user-facing op from C++, through the dispatcher (no Python).
//
//   upscale <inputs.safetensors> <outputs.safetensors>
//
// Inputs, as tensors of one safetensors file (write it from Python with
// safetensors.torch.save_file; tests/test_libtorch_example.py does):
//   feat [B, D, h, w]      the backbone's LR features (float32 or float64)
//   lr [B, 3, h, w]        the normalised LR image
//   out_size [2] int64     (H, W)
//   depths [M] int64       Linear layers per upsampler branch, branch 0 the heaviest
//   classifier.<i>         the classifier's flat [W0, b0, W1, b1, ...] list, i = 0, 1, ...
//   upsamplers.<i>         every branch's [W, b] pairs one after the other, i = 0, 1, ...
//   cost [M]               the branches' relative costs
// and the metadata "k" (a number; default 0), "adaptive" and "refine" ("0" or "1"; defaults
// 0 and 1). Output: sr [B, 3, H, W] and classes [B, H, W] int64.
//
// The op comes from the pcsr library (CMakeLists.txt): linking it registers the pcsr::
// schemas and the CPU kernels (TORCH_LIBRARY / TORCH_LIBRARY_IMPL run when it loads).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <exception>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "safetensors.h"

namespace {

const at::Tensor& need(const safetensors::File& f, const std::string& name) {
  auto it = f.tensors.find(name);
  if (it == f.tensors.end()) throw std::runtime_error("input has no tensor \"" + name + "\"");
  return it->second;
}

// name.0, name.1, ... in order, as many as there are.
std::vector<at::Tensor> numbered(const safetensors::File& f, const std::string& name) {
  std::vector<at::Tensor> out;
  for (size_t i = 0;; ++i) {
    auto it = f.tensors.find(name + "." + std::to_string(i));
    if (it == f.tensors.end()) return out;
    out.push_back(it->second);
  }
}

std::vector<int64_t> ints(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::string meta(const safetensors::File& f, const std::string& key, const std::string& fallback) {
  auto it = f.metadata.find(key);
  return it == f.metadata.end() ? fallback : it->second;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " <inputs.safetensors> <outputs.safetensors>\n";
    return 2;
  }
  try {
    const safetensors::File in = safetensors::load(argv[1]);
    // pcsr::route_upsample(Tensor feat, Tensor lr, SymInt[2] out_size, Tensor[] classifier,
    //   Tensor[] upsamplers, int[] depths, Tensor cost, float k, bool adaptive, bool refine,
    //   str? precision) -> (Tensor sr, Tensor classes); called boxed, as any schema can be.
    const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow("pcsr::route_upsample", "");
    torch::jit::Stack stack;
    torch::jit::push(stack, need(in, "feat"), need(in, "lr"), ints(need(in, "out_size")), numbered(in, "classifier"),
                     numbered(in, "upsamplers"), ints(need(in, "depths")), need(in, "cost"),
                     std::stod(meta(in, "k", "0")), meta(in, "adaptive", "0") == "1", meta(in, "refine", "1") == "1",
                     c10::IValue());
    op.callBoxed(&stack);
    const at::Tensor sr = stack[0].toTensor(), classes = stack[1].toTensor();
    safetensors::save(argv[2], {{"sr", sr}, {"classes", classes}});
    std::cout << "pcsr::route_upsample: sr " << sr.sizes() << ", classes " << classes.sizes() << " -> " << argv[2]
              << "\n";
  } catch (const std::exception& e) {
    std::cerr << "upscale: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
