"""Fast CPU runtimes: exported graphs (OpenVINO, ONNX Runtime) cached per model and weights.

Importing this package, `.cache`, `.openvino_engine` or `.onnx_engine` never imports torch;
only building an export (`.export`) does. See docs/benchmarks.md for speed and fidelity.
"""
from __future__ import annotations

import importlib.util

def default_backend() -> str:
    """OpenVINO when installed, else torch (cheap: nothing is imported)."""
    return "openvino" if importlib.util.find_spec("openvino") is not None else "torch"
