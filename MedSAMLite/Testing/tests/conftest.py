"""pytest setup: the module folder (MedSAMLite.py, MedSAMLiteLib) and this folder are importable; the fixtures
that test_panel.py and test_effect.py share (each in a process of its own with slicer_app installed)."""
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1]
for path in (HERE, MODULE_DIR):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="module")
def panel():
    """The module panel, opened once (as in a Slicer session); each test starts from a closed scene."""
    import pythonqt
    import slicer_app

    panel = slicer_app.open_module()
    assert pythonqt.take_errors() == []
    return panel


@pytest.fixture
def closed_scene(panel):
    """A test of the panel or the effect: the scene closed first, and an exception in any slot fails it."""
    import pythonqt
    import slicer_app

    slicer_app.close_scene()
    pythonqt.process_events()
    slicer_app.messages.clear()
    yield panel
    pythonqt.process_events()
    errors = pythonqt.take_errors()
    assert errors == [], f"exceptions in slots: {errors}"
