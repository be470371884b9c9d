"""pytest setup: the module folder (MedSAMLite.py, MedSAMLiteLib) and this folder are importable."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1]
for path in (HERE, MODULE_DIR):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
