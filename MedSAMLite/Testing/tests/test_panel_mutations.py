"""Tests of the panel harness: each change below breaks MedSAMLite's panel in a real Slicer (5.6 to 5.12,
Qt 5.15 or PythonQt's rules), so the panel tests must fail on a copy of MedSAMLite.py that has it.

Each case applies one change to a copy of the module file, runs the panel tests that reach that code
(MEDSAMLITE_PANEL_MODULE_FILE points slicer_app at the copy) and expects them to fail with a message
that names the fault. The Qt 5.15 case runs in the Qt 5.15 profile (`.venv-qt5`, built by `make test`).
If MedSAMLite.py changes where a case applies it, the case says so: move it to code that still exists.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MODULE_FILE = TESTS.parents[1] / "MedSAMLite.py"
PANEL_TESTS = TESTS / "test_panel.py"
QT5_PYTHON = TESTS.parents[2] / ".venv-qt5" / "bin" / "python"
CHILD = "import os, sys, pytest; rc = int(pytest.main(sys.argv[1:])); sys.stdout.flush(); os._exit(rc)"

# (id, text in MedSAMLite.py, its replacement, panel tests to run (-k), text the failure must show, profile)
MUTATIONS = [
    ("plain C++ method (not a slot, not Q_INVOKABLE)",
     "        self.ui = slicer.util.childWidgetVariables(uiWidget)\n",
     "        self.ui = slicer.util.childWidgetVariables(uiWidget)\n        self.ui.modelsCollapsibleButton.setCollapsed(True)\n",
     "opens_with", "setCollapsed", None),
    ("Q_PROPERTY called as a method",
     '        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()\n',
     '        red = slicer.app.layoutManager().sliceWidget("Red")\n'
     '        if red.sliceOrientation() not in ("Axial", "Reformat"):\n'
     '            raise InputError("show an axial slice in the Red view")\n'
     '        sliceNode = red.mrmlSliceNode()\n',
     "2d_mode", "not callable", None),
    ("QTimer.singleShot assigned as a property",
     "        timer.setSingleShot(singleShot)\n", "        timer.singleShot = singleShot\n",
     "opens_with", "singleShot", None),
    ("mistyped property assignment",
     "        self.ui.progressBar.visible = running\n", "        self.ui.progressBar.visibel = running\n",
     "opens_with", "creating new attributes on C++ objects is not allowed", None),
    ("slicer.util keyword only 5.12 has",
     "                    slicer.util.pip_install(arguments)\n",
     '                    slicer.util.pip_install(arguments, requester="MedSAMLite")\n',
     "missing_openvino", "pip_install() in Slicer 5.6", "without_openvino"),
    ("a Python object as a QWidget* (file dialog parent)",
     "qt.QFileDialog.getOpenFileName(self.parent, ", "qt.QFileDialog.getOpenFileName(self, ",
     "importing_a_checkpoint", "PythonQt needs a QWidget*", None),
    ("a file dialog argument Qt does not have",
     '"PyTorch checkpoints (*.pth *.pt *.ckpt);;All files (*)")',
     '"PyTorch checkpoints (*.pth *.pt *.ckpt);;All files (*)", initialFilter="*.pth")',
     "importing_a_checkpoint", "initialFilter", None),
    ("a signal only Qt >= 6.7 has (on Qt 5.15 the slot never runs)",
     'self.ui.zoomCheckBox.connect("toggled(bool)", ', 'self.ui.zoomCheckBox.connect("checkStateChanged(Qt::CheckState)", ',
     "opens_with", "checkStateChanged", "qt5"),
    ("a control's connect line deleted",
     '        self.ui.zoomCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)\n', "",
     "each_control", "Zoom", None),
    ("an exception in a VTK observer (scene close)",
     "        if self.parent.isEntered:\n            self.initializeParameterNode()\n",
     "        if self.parent.isEntered:\n            self.initialiseParameterNode()\n",
     "opens_with", "initialiseParameterNode", None),
    ("an exception in a timer's slot",
     "    def onPrefetch(self):\n", "    def onPrefetch(self):\n        self.ui.statusLabel.setText(self.prefetchTask.status())\n",
     "exit_stops", "NoneType", None),
]


@pytest.mark.parametrize("what, old, new, tests, message, profile", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_the_panel_tests_fail_on_a_module_file_with(what, old, new, tests, message, profile, tmp_path):
    source = MODULE_FILE.read_text()
    assert source.count(old) == 1, f"MedSAMLite.py changed: {old!r} is no longer there once; move this case"
    folder = tmp_path / "MedSAMLite"
    folder.mkdir()
    (folder / "Resources").symlink_to(MODULE_FILE.parent / "Resources")
    (folder / "SegmentEditorMedSAMLiteLib").symlink_to(MODULE_FILE.parent / "SegmentEditorMedSAMLiteLib")  # its effect
    (folder / "MedSAMLite.py").write_text(source.replace(old, new))
    env = dict(os.environ, MEDSAMLITE_PANEL_PROCESS="1", MEDSAMLITE_PANEL_MODULE_FILE=str(folder / "MedSAMLite.py"))
    python = sys.executable
    if profile == "qt5":
        assert QT5_PYTHON.exists(), "needs the Qt 5.15 profile: make venv-qt5"
        python = str(QT5_PYTHON)
        env["MEDSAMLITE_QT"] = "PySide2"
    elif profile == "without_openvino":
        env["MEDSAMLITE_PANEL_WITHOUT_OPENVINO"] = "1"
    result = subprocess.run([python, "-c", CHILD, "-x", "-q", "-p", "no:cacheprovider", str(PANEL_TESTS), "-k", tests],
                            env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"the panel tests did not fail ({result.returncode}):\n{output[-4000:]}"
    assert message in output, f"they failed, but not on the change (expected {message!r}):\n{output[-6000:]}"


def test_the_unchanged_module_file_passes_the_same_selection(tmp_path):
    """The control: the selections above pass on the real file (so each failure is the change's)."""
    selection = " or ".join(sorted({m[3] for m in MUTATIONS if m[5] is None}))
    env = dict(os.environ, MEDSAMLITE_PANEL_PROCESS="1")
    result = subprocess.run([sys.executable, "-c", CHILD, "-q", "-p", "no:cacheprovider", str(PANEL_TESTS), "-k", selection],
                            env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
