"""pcsr: pixel-level routed super-resolution (PCSR, ECCV 2024), fast.

    import pcsr
    model = pcsr.load("fsrcnn")                  # a bundled model, or a checkpoint path
    lr = pcsr.read_image("photo.jpg")            # [1, 3, h, w] float32 in [0, 1]
    sr, classes = model(lr, scale=4, k=0.0)      # sr [1, 3, H, W], classes [1, H, W]
    pcsr.write_image("photo_x4.png", sr)         # clamped to [0, 1]; format from the extension

Inference runs through ``torch.ops.pcsr.route_upsample``; choose its backend with
``PCSR_BACKEND`` or :func:`pcsr_kernels.set_backend`.
"""
from .checkpoint import CheckpointError, bundled_models, load, save
from .imageio import ImageError, load_image, read_image, write_image
from .model import PCSR, SRModel

__version__ = "0.1.0"
__all__ = ["PCSR", "SRModel", "load", "save", "bundled_models", "CheckpointError", "read_image", "write_image",
           "load_image", "ImageError", "__version__"]
