"""Triton kernels behind ``torch.ops.pcsr`` (the ``triton`` backend).

One module per op stem, each reading top to bottom: ``@triton.jit`` kernels, the launcher
(block sizes, grid, host-side shape asserts), then the op glue:

    route_upsample.py  the whole stage: dense pass, branch kernels, refine (no host sync)
    dense.py           K1: classifier (fp32) + routing + lightest branch + index lists, every pixel
    branch.py          K2: one branch's MLP over its index list, persistent
    refine.py          K3: 3x3 stencil on light pixels that touch heavy ones (uint8 or int64 classes)
    tc_mlp.py          register-chunked tensor-core MLP device functions, precision modes
    upsample.py        the upsample op on the dense pass and branch kernels
    classify.py        the classify op: nearest feature + classifier MLP + softmax
    mlp.py             the scratch-tile fused MLP (classify; wide ieee/tf32x3 branches)
    route.py           cost-aware argmax / heavy mass from given probabilities
    adm.py             ADM (1-D K-means of the heavy mass) entirely on the device
    pack.py            cached, transposed, zero-padded weights and the LR precompute
    config.py          launch parameters (imports no Triton)
    compile_check.py   builds every kernel for a GPU target without a GPU (ptxas -v report)

Nothing here is imported by ``import pcsr_kernels``: ``pcsr_kernels.triton_backend``
imports these modules on first use, because ``@triton.jit`` reads ``TRITON_INTERPRET``
when a kernel is decorated.
"""
