#pragma once
// The operator schemas of torch.ops.pcsr, in one place for the C++ side.
// Shapes: feat [B,D,h,w]; lr [B,3,h,w]; probs [B,H,W,M]; classes [B,H,W] int64;
// sr [B,3,H,W]. Weights are flat lists of nn.Linear (W [out,in], b [out]) pairs.
namespace pcsr {

inline constexpr const char* kSchemas[] = {
    "route_upsample(Tensor feat, Tensor lr, SymInt[2] out_size, Tensor[] classifier, "
    "Tensor[] upsamplers, int[] depths, Tensor cost, float k=0., bool adaptive=False, "
    "bool refine=True, str? precision=None) -> (Tensor sr, Tensor classes)",
    "classify(Tensor feat, SymInt[2] out_size, Tensor[] classifier) -> Tensor probs",
    "route(Tensor probs, Tensor cost, float k=0., bool adaptive=False) -> Tensor classes",
    "upsample(Tensor feat, Tensor lr, Tensor classes, Tensor[] upsamplers, int[] depths, "
    "str? precision=None) -> Tensor sr",
    "refine(Tensor sr, Tensor classes, int num_branches) -> Tensor refined",
};

}  // namespace pcsr
