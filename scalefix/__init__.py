"""scalefix: find and fix quantized checkpoints whose scales loaders silently drop."""

__version__ = "0.1.0"
