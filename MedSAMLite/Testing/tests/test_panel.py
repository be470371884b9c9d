"""The real panel (MedSAMLite.py's widget and .ui), built as Slicer builds it and driven as a user would.

Qt is PySide6 offscreen behaving as PythonQt (MedSAMLite/Testing/pythonqt.py); ctk/qMRML widgets and
slicer.app are stand-ins on slicer-core's real scene (slicer_app.py). What this cannot show is listed in
docs/panel_testing.md. The tests run in a process of their own: the Logic tests' harness puts an inert
`qt` into sys.modules, and one QApplication per process is all Qt allows.
"""
import os
import subprocess
import sys

CHILD = os.environ.get("MEDSAMLITE_PANEL_PROCESS") == "1"

if not CHILD:

    def test_panel_in_its_own_process():
        env = dict(os.environ, MEDSAMLITE_PANEL_PROCESS="1")
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", __file__],
                                env=env, capture_output=True, text=True, timeout=1200)
        print(result.stdout[-6000:])
        assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]

else:
    import symtable
    import builtins
    from pathlib import Path

    import numpy as np
    import pytest

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import harness  # noqa: E402
    import pythonqt  # noqa: E402
    import slicer_app  # noqa: E402

    slicer_app.install()
    import qt  # noqa: E402
    import slicer  # noqa: E402

    TESTDATA = harness.MODULE_DIR / "Resources" / "TestData"

    @pytest.fixture(scope="module")
    def panel():
        """The module panel, opened once (as in a Slicer session); each test starts from a closed scene."""
        panel = slicer_app.open_module()
        assert pythonqt.take_errors() == []
        return panel

    @pytest.fixture
    def gui(panel):
        slicer_app.close_scene()
        pythonqt.process_events()
        slicer_app.messages.clear()
        yield panel.self()
        pythonqt.process_events()
        errors = pythonqt.take_errors()
        assert errors == [], f"exceptions in slots: {errors}"
        assert slicer.app.overrideCursorDepth == 0, "a wait cursor was never restored"

    def click(button):
        """A user's click: the button must be enabled and visible, as for a real mouse click."""
        assert button.enabled, f"{button.name} is disabled"
        button.click()
        pythonqt.process_events()

    def load_volume(name="CT"):
        volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(TESTDATA / "MedSAMLiteTestVolume.nrrd"), name, 0, None)
        assert volume is not None
        return volume

    # -- the panel opens as in Slicer ------------------------------------------------------------------
    def test_panel_opens_with_its_controls(gui):
        ui = gui.ui
        assert ui.segmentButton.text == "Segment"
        assert not ui.segmentButton.enabled  # nothing chosen yet
        assert ui.backendComboBox.count >= 3
        assert ui.presetComboBox.count == 9 and ui.modeComboBox.count == 3
        assert ui.volumeSelector.mrmlScene() is slicer.mrmlScene and ui.segmentSelector.mrmlScene() is slicer.mrmlScene

    def test_the_stand_in_is_strict_where_pythonqt_is_silent(gui):
        button = gui.ui.segmentButton
        button.enabled = False
        assert not qt.QPushButton.isEnabled(button)  # the property reached the widget
        button.enabled = True
        with pytest.raises(AttributeError, match="no signal"):
            button.connect("clicked(int)", lambda: None)
        with pytest.raises(AttributeError, match="no Qt property"):
            button.enable = False  # a typo PythonQt would keep as a Python attribute
        with pytest.raises(AttributeError):
            gui.ui.volumeSelector.nodes()  # public in C++ but not Q_INVOKABLE: PythonQt does not show it
        with pytest.raises(AttributeError, match="no signal"):
            gui.ui.volumeSelector.connect("currentNodeChanged(vtkMRMLVolumeNode*)", lambda: None)

    def test_removing_any_import_from_the_module_breaks_a_test(tmp_path):
        """Every global name the module file uses must be bound by the file itself (Slicer injects nothing)."""
        source = slicer_app.MODULE_FILE.read_text()
        table = symtable.symtable(source, str(slicer_app.MODULE_FILE), "exec")
        defined = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
        used = set()

        def walk(scope):
            for symbol in scope.get_symbols():
                if symbol.is_referenced() and (symbol.is_global() or scope is table) and not symbol.is_assigned():
                    used.add(symbol.get_name())
            for child in scope.get_children():
                walk(child)

        walk(table)
        missing = sorted(n for n in used - defined if not hasattr(builtins, n) and n not in ("__file__", "__name__"))
        assert missing == [], f"names used but never imported or defined: {missing}"
        # and dynamically: without `import qt` the panel cannot open
        folder = tmp_path / "MedSAMLite"
        folder.mkdir()
        (folder / "Resources").symlink_to(harness.MODULE_DIR / "Resources")
        (folder / "MedSAMLite.py").write_text(source.replace("\nimport qt\n", "\n", 1))
        saved = sys.modules["MedSAMLite"], slicer.modules.medsamlite
        try:
            with pytest.raises(NameError, match="'qt'"):
                slicer_app.open_module(path=folder / "MedSAMLite.py")
        finally:
            sys.modules["MedSAMLite"], slicer.modules.medsamlite = saved
            pythonqt.take_errors()

    # -- inputs --------------------------------------------------------------------------------------
    def test_choosing_volume_roi_and_segmentation_enables_segment(gui):
        ui = gui.ui
        volume = load_volume()
        label = slicer.modules.volumes.logic().CreateAndAddLabelVolume(slicer.mrmlScene, volume, "labels")
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
        pythonqt.process_events()
        assert ui.volumeSelector.nodeCount() == 1  # the labelmap is not offered as input
        ui.volumeSelector._user_select(volume)
        ui.roiSelector._user_select(roi)
        ui.segmentationSelector._user_select(segmentation)
        parameters = gui.logic.getParameterNode()
        assert parameters.GetNodeReference("InputVolume") is volume
        assert parameters.GetNodeReference("ROI") is roi
        assert parameters.GetNodeReference("Segmentation") is segmentation
        assert ui.segmentSelector.currentNode() is segmentation  # the .ui connection
        assert ui.segmentButton.enabled
        assert label.GetID() not in [ui.volumeSelector.nodeFromIndex(i).GetID() for i in range(ui.volumeSelector.nodeCount())]
