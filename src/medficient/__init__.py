"""medficient: promptable medical image segmentation on a laptop CPU.

Importing the package is cheap and torch-free; `build_model` pulls in torch on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["build_model", "get_spec", "list_models", "__version__"]


def __getattr__(name: str):
    if name in ("build_model", "get_spec", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'medficient' has no attribute {name!r}")
