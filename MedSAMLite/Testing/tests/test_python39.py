"""Slicer 5.6 and 5.8 run Python 3.9: the module file and MedSAMLiteLib must compile there, and the module
file and mrml/ must import and run their non-Qt parts there.

Runs a real Python 3.9 (pyenv's, else python3.9 on PATH) in a child process. Slicer's own modules (qt,
ctk, slicer, vtk) are inert stand-ins there, and numpy too when that interpreter has none: this checks
the language and standard library the code uses, not MRML (the other tests do that on 3.10+).
"""
import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2]


def python39():
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9.*/bin/python")) + glob.glob("/root/.pyenv/versions/3.9.*/bin/python"))
    found = [c for c in candidates if os.access(c, os.X_OK)] or [shutil.which("python3.9")]
    return found[-1]


CHILD = r'''
import sys, types, importlib, pathlib
assert sys.version_info[:2] == (3, 9), sys.version
module_dir = pathlib.Path(sys.argv[1])
for path in [module_dir / "MedSAMLite.py", *sorted((module_dir / "MedSAMLiteLib").rglob("*.py")),
             *sorted((module_dir / "SegmentEditorMedSAMLiteLib").rglob("*.py"))]:
    compile(path.read_text(), str(path), "exec", dont_inherit=True)

class Inert:
    """Any name of Slicer's own modules: callable, subclassable, every attribute another Inert."""
    def __init__(self, *args, **kwargs): pass
    def __call__(self, *args, **kwargs): return Inert()
    def __getattr__(self, name): return Inert()
    def __mro_entries__(self, bases): return (Inert,)

def inert(name):
    module = types.ModuleType(name)
    module.__getattr__ = lambda attr: Inert()
    module.__path__ = []
    sys.modules[name] = module
    return module

names = ["qt", "ctk", "vtk", "vtk.util", "vtk.util.numpy_support", "slicer", "slicer.util", "slicer.ScriptedLoadableModule"]
try:
    import numpy  # noqa: F401
except ImportError:
    names.append("numpy")
for name in names:
    inert(name)
sys.modules["slicer"].util = sys.modules["slicer.util"]
class VTKObservationMixin:
    def __init__(self): pass
sys.modules["slicer.util"].VTKObservationMixin = VTKObservationMixin
sml = sys.modules["slicer.ScriptedLoadableModule"]
for base in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"):
    setattr(sml, base, type(base, (), {"__init__": lambda self, *a, **k: None}))
sys.path.insert(0, str(module_dir))
module = importlib.import_module("MedSAMLite")
for name in ("MedSAMLiteLib.mrml", "MedSAMLiteLib.mrml.inputs", "MedSAMLiteLib.mrml.segments", "MedSAMLiteLib.dependencies",
             "MedSAMLiteLib.engine.client"):
    importlib.import_module(name)
# the non-Qt parts: module metadata, the Logic's dependency check, the constrained install's files
parent = types.SimpleNamespace()
made = module.MedSAMLite.__new__(module.MedSAMLite)
made.parent = parent  # the stand-in base's __init__ does nothing
module.MedSAMLite.__init__(made, parent)
assert parent.title == "MedSAMLite" and parent.categories == ["Segmentation"]
logic = module.MedSAMLiteLogic()
assert set(logic.missingDependencies()) <= {"openvino", "opencv-python-headless"}
node = types.SimpleNamespace(values={}, GetParameter=lambda key: node.values.get(key, ""),
                             SetParameter=lambda key, value: node.values.__setitem__(key, value))
logic.setDefaultParameters(node)
assert node.values["Backend"] == module.DEFAULT_BACKEND
dependencies = sys.modules["MedSAMLiteLib.dependencies"]
with dependencies.pip_install_arguments() as arguments:
    assert arguments[0] == "-r" and pathlib.Path(arguments[3]).read_text().strip()
print("python 3.9 ok")
'''


def test_module_file_and_mrml_under_python_3_9():
    python = python39()
    if python is None:
        pytest.skip("no Python 3.9 here (pyenv or python3.9 on PATH)")
    result = subprocess.run([python, "-I", "-B", "-c", CHILD, str(MODULE_DIR)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "python 3.9 ok" in result.stdout, result.stdout[-3000:] + result.stderr[-5000:]
