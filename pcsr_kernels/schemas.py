"""The operator schemas of ``torch.ops.pcsr``.

The compiled extension defines the same strings in ``csrc/schemas.h``; when it is not
built, :mod:`pcsr_kernels.ops` defines them from here so that the reference path still
goes through the dispatcher. ``tests/test_ops.py`` checks that the two copies agree.
"""

SCHEMAS = {
    "route_upsample": (
        "route_upsample(Tensor feat, Tensor lr, SymInt[2] out_size, Tensor[] classifier, "
        "Tensor[] upsamplers, int[] depths, Tensor cost, float k=0., bool adaptive=False, "
        "bool refine=True, str? precision=None) -> (Tensor sr, Tensor classes)"
    ),
    "classify": "classify(Tensor feat, SymInt[2] out_size, Tensor[] classifier) -> Tensor probs",
    "route": "route(Tensor probs, Tensor cost, float k=0., bool adaptive=False) -> Tensor classes",
    "upsample": (
        "upsample(Tensor feat, Tensor lr, Tensor classes, Tensor[] upsamplers, int[] depths, "
        "str? precision=None) -> Tensor sr"
    ),
    "refine": "refine(Tensor sr, Tensor classes, int num_branches) -> Tensor refined",
}
