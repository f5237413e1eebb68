"""pcsr: pixel-level routed super-resolution (PCSR, ECCV 2024), fast.

    import pcsr
    model = pcsr.load("fsrcnn")                  # a bundled model, or a checkpoint path
    sr, classes = model(lr, scale=4, k=0.0)      # lr [B,3,h,w] in [0,1]

Inference runs through ``torch.ops.pcsr.route_upsample``; choose its backend with
``PCSR_BACKEND`` or :func:`pcsr_kernels.set_backend`.
"""
from .checkpoint import CheckpointError, bundled_models, load, save
from .model import PCSR, SRModel

__version__ = "0.1.0"
__all__ = ["PCSR", "SRModel", "load", "save", "bundled_models", "CheckpointError", "__version__"]
