"""The panel's install arguments: the requirements plus every installed distribution pinned (stdlib only)."""
import subprocess
import sys
from pathlib import Path

import numpy as np

from MedSAMLiteLib import dependencies

MODULE_DIR = Path(__file__).resolve().parents[2]


def _constraints(args: list[str]) -> dict[str, str]:
    assert args[0] == "-r" and args[2] == "-c" and len(args) == 4, args
    lines = Path(args[3]).read_text().splitlines()
    return dict(line.split("==", 1) for line in lines)


def test_arguments_name_the_requirements_and_pin_what_is_installed():
    args = dependencies.pip_install_arguments()
    assert Path(args[1]) == MODULE_DIR / "Resources" / "requirements.txt" and Path(args[1]).is_file()
    pins = _constraints(args)
    assert pins["numpy"] == np.__version__  # what Slicer ships stays as it is
    assert pins == dependencies.installed_versions()
    Path(args[3]).unlink()


def test_requirements_are_what_the_panel_checks_for():
    names = [line.split(">=")[0] for line in dependencies.REQUIREMENTS.read_text().splitlines() if line and line[0] != "#"]
    assert names == ["openvino", "opencv-python-headless"]


def test_odd_versions_pin_as_strings():
    text = dependencies.constraints_text({"numpy": "1.26.4", "torch": "2.5.1+cpu", "odd": "2013b"})
    assert text.splitlines() == ["numpy==1.26.4", "odd===2013b", "torch==2.5.1+cpu"]


def test_changed_versions():
    before = {"numpy": "1.26.4", "scipy": "1.13.1", "simpleitk": "2.3.1"}
    after = {"numpy": "2.0.2", "scipy": "1.13.1", "openvino": "2025.3.0"}
    assert dependencies.changed_versions(before, after) == {"numpy": ("1.26.4", "2.0.2"), "simpleitk": ("2.3.1", None)}


def test_runs_on_the_standard_library_alone_and_pip_reads_the_constraints(tmp_path):
    """No site-packages (as before openvino/opencv exist); then pip parses the file without an index."""
    code = (f"import sys; sys.path.insert(0, {str(MODULE_DIR)!r}); from MedSAMLiteLib import dependencies; "
            "print(dependencies.pip_install_arguments()[3])")
    child = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert "numpy" not in Path(child.stdout.strip()).read_text()  # -S: no site-packages, nothing to pin
    constraints = dependencies.write_constraints()
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-c", str(constraints), "numpy"],
                         capture_output=True, text=True, timeout=120)
    constraints.unlink()
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert "already satisfied" in pip.stdout
