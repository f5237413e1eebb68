"""pcsr: pixel-level routed super-resolution (PCSR, ECCV 2024), fast.

    import pcsr
    model = pcsr.load("fsrcnn")                  # a bundled model, or a checkpoint path
    lr = pcsr.read_image("photo.jpg")            # [1, 3, h, w] float32 in [0, 1]
    sr, classes = model(lr, scale=4, k=0.0)      # sr [1, 3, H, W], classes [1, H, W]
    pcsr.write_image("photo_x4.png", sr)         # clamped to [0, 1]; format from the extension

Inference runs through ``torch.ops.pcsr.route_upsample``; choose its backend with
``PCSR_BACKEND`` or :func:`pcsr_kernels.set_backend`.
"""
import importlib

__version__ = "0.1.0"

# The public names, imported on first use (module __getattr__): they import torch, and the
# ``pcsr`` command (pcsr.cli, a submodule: importing it runs this file) must not pay for
# that before it knows which subcommand runs (`pcsr --help` imports no torch).
_LAZY = {"PCSR": "model", "SRModel": "model", "load": "checkpoint", "save": "checkpoint",
         "bundled_models": "checkpoint", "CheckpointError": "checkpoint", "read_image": "imageio",
         "write_image": "imageio", "load_image": "imageio", "ImageError": "imageio"}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
