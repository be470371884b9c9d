"""The core (MedSAMLiteLib) runs in Slicer on numpy, openvino, opencv and SimpleITK only: never torch,
slicer or qt. (headless/samples.py builds demo and test data and may use scipy and scikit-image.)"""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import MedSAMLiteLib

ALLOWED = {"numpy", "openvino", "cv2", "SimpleITK"}
DATA_ONLY = {"MedSAMLiteLib.headless.samples"}  # demo/test data builders


def _modules():
    return [m.name for m in pkgutil.walk_packages(MedSAMLiteLib.__path__, "MedSAMLiteLib.") if m.name not in DATA_ONLY]


def test_every_import_statement_names_an_allowed_package():
    root = Path(MedSAMLiteLib.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        if ".".join(("MedSAMLiteLib", *path.relative_to(root).with_suffix("").parts)) in DATA_ONLY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in ALLOWED and top not in sys.stdlib_module_names and top != "MedSAMLiteLib":
                    bad.append(f"{path.name}: {name}")
    assert bad == []


def test_importing_the_whole_core_loads_no_torch_slicer_or_qt():
    code = ("import importlib, sys\n"
            f"for name in {_modules()!r}: importlib.import_module(name)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'slicer', 'qt', 'ctk', 'vtk', 'scipy', 'skimage'}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
