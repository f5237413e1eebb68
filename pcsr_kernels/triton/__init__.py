"""Triton kernels behind ``torch.ops.pcsr`` (the ``triton`` backend).

One module per op stem, each reading top to bottom: ``@triton.jit`` kernels, the launcher
(block sizes, grid, host-side shape asserts), then the op glue:

    classify.py        nearest feature + classifier MLP + softmax (+ cost-aware argmax)
    route.py           cost-aware argmax / heavy mass from given probabilities
    adm.py             ADM (1-D K-means of the heavy mass) entirely on the device
    sort.py            counting sort of pixel indices by class, segments padded per block
    upsample.py        grouped per-branch fused MLP over the sorted segments
    refine.py          3x3 stencil on light pixels that touch heavy ones
    route_upsample.py  the whole stage, fused end to end
    mlp.py             the fused-MLP device functions shared by classify and upsample
    pack.py            cached, transposed, zero-padded weights and the LR precompute
    config.py          dot precision and launch parameters (imports no Triton)
    compile_check.py   builds every kernel for a GPU target without a GPU (ptxas -v report)

Nothing here is imported by ``import pcsr_kernels``: ``pcsr_kernels.triton_backend``
imports these modules on first use, because ``@triton.jit`` reads ``TRITON_INTERPRET``
when a kernel is decorated.
"""
