"""MedSAMLiteLib runs in Slicer on numpy, openvino, opencv and SimpleITK only: never torch,
slicer or qt. (headless/samples.py builds demo and test data and may use scipy and scikit-image;
the subpackage mrml/ is the Slicer side (MRML inputs in, segments out), the one part that may import slicer
and vtk.)"""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import MedSAMLiteLib

ALLOWED = {"numpy", "openvino", "cv2", "SimpleITK"}
# demo/test data builders, and the evaluation command and its NSD (scipy for the click protocol's 3D
# error regions and the surface distance transform); none of them runs in Slicer
DATA_ONLY = {"MedSAMLiteLib.headless.samples", "MedSAMLiteLib.headless.corrections", "MedSAMLiteLib.headless.surface"}
# optional extras, imported inside functions only (`pip install 'medsamlite[cluster]'`; Slicer never runs them)
OPTIONAL = {"MedSAMLiteLib.headless.executor": {"distributed", "tqdm"}}
SLICER_SIDE = "MedSAMLiteLib.mrml"  # this subpackage may import slicer and vtk too; imported by the Logic only, in Slicer


def _slicer_side(module):
    return module == SLICER_SIDE or module.startswith(SLICER_SIDE + ".")


def _modules():
    return [m.name for m in pkgutil.walk_packages(MedSAMLiteLib.__path__, "MedSAMLiteLib.") if m.name not in DATA_ONLY and not _slicer_side(m.name)]


def test_every_import_statement_names_an_allowed_package():
    root = Path(MedSAMLiteLib.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        module = ".".join(("MedSAMLiteLib", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        if module in DATA_ONLY:
            continue
        allowed = ALLOWED | ({"slicer", "vtk"} if _slicer_side(module) else set()) | OPTIONAL.get(module, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in allowed and top not in sys.stdlib_module_names and top != "MedSAMLiteLib":
                    bad.append(f"{path.name}: {name}")
    assert bad == []


def test_importing_the_whole_core_loads_no_torch_slicer_or_qt():
    code = ("import importlib, sys\n"
            f"for name in {_modules()!r}: importlib.import_module(name)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'slicer', 'qt', 'ctk', 'vtk', 'scipy', 'skimage'}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_the_slicer_side_exemption_names_a_package_that_exists():
    """The exemption is exactly one subpackage, and it exists (a rename must update SLICER_SIDE)."""
    root = Path(MedSAMLiteLib.__file__).parent
    assert (root / SLICER_SIDE.split(".", 1)[1].replace(".", "/") / "__init__.py").is_file()
