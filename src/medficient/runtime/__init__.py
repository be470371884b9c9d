"""Fast CPU runtimes: exported graphs (OpenVINO, ONNX Runtime) cached per model and weights.

Importing this package, `.cache`, `.openvino_engine` or `.onnx_engine` never imports torch;
only building an export (`.export`) does. See docs/benchmarks.md for speed and fidelity.
"""
from __future__ import annotations

import importlib.util

BACKENDS = ("openvino", "onnxruntime", "torch")


def backend_available(backend: str) -> bool:
    """Whether the backend's library is installed (cheap: nothing is imported)."""
    module = {"openvino": "openvino", "onnxruntime": "onnxruntime", "torch": "torch"}[backend]
    return importlib.util.find_spec(module) is not None


def default_backend() -> str:
    """OpenVINO when installed, else torch."""
    return "openvino" if backend_available("openvino") else "torch"
