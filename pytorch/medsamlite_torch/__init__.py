"""medsamlite_torch: the PyTorch side of MedSAMLite (networks, training, evaluation, cross-checks).

The Slicer extension and the `medsamlite` command never need it. Importing the package is cheap
and torch-free; `build_model` pulls in torch on first use.
"""
from __future__ import annotations

__version__ = "0.2.0"
__all__ = ["build_model", "get_spec", "list_models", "__version__"]


def __getattr__(name: str):
    if name in ("build_model", "get_spec", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'medsamlite_torch' has no attribute {name!r}")
