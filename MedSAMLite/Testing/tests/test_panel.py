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
WITHOUT_OPENVINO = os.environ.get("MEDSAMLITE_PANEL_WITHOUT_OPENVINO") == "1"

# pytest in a child process, left with os._exit once the tests are over: PySide's and VTK's objects are
# not torn down at interpreter exit in Slicer's order, and nothing of the module runs then (see also
# pythonqt._keep_singletons_alive).
PYTEST_CHILD = "import os, sys, pytest; rc = int(pytest.main(sys.argv[1:])); sys.stdout.flush(); sys.stderr.flush(); os._exit(rc)"

if not CHILD:

    def test_panel_in_its_own_process():
        env = dict(os.environ, MEDSAMLITE_PANEL_PROCESS="1")
        result = subprocess.run([sys.executable, "-X", "faulthandler", "-c", PYTEST_CHILD, "-q", "-p", "no:cacheprovider", "-rA", "-W", "error::UserWarning", __file__],
                                env=env, capture_output=True, text=True, timeout=1200)
        print(result.stdout[-6000:])
        assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]

else:
    import symtable
    import types
    import builtins
    from pathlib import Path

    import numpy as np
    import pytest

    if WITHOUT_OPENVINO:  # Slicer after an upgrade: the cache survived, openvino and opencv did not
        import importlib.abc
        import importlib.machinery
        import importlib.metadata

        HIDDEN = {"openvino", "cv2"}  # import names; their distributions: openvino, opencv-python-headless

        class Hide(importlib.abc.MetaPathFinder):
            """sys.path's finder, blind to the hidden packages and their metadata (as if not installed)."""

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HIDDEN:
                    return None
                return importlib.machinery.PathFinder.find_spec(name, path, target)

            def find_distributions(self, *args, **kwargs):
                hidden = {"openvino" if n == "openvino" else "opencv-python-headless" for n in HIDDEN}
                return (d for d in importlib.machinery.PathFinder.find_distributions(*args, **kwargs)
                        if (d.metadata["Name"] or "").lower() not in hidden)

        sys.meta_path[:] = [Hide() if f is importlib.machinery.PathFinder else f for f in sys.meta_path]

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import harness  # noqa: E402
    import pythonqt  # noqa: E402
    import slicer_app  # noqa: E402

    slicer_app.install()
    import qt  # noqa: E402
    import slicer  # noqa: E402

    TESTDATA = harness.MODULE_DIR / "Resources" / "TestData"
    BROKEN = []

    @pytest.fixture
    def gui(closed_scene):
        yield closed_scene.self()
        pythonqt.process_events()
        assert slicer.app.overrideCursorDepth == 0, "a wait cursor was never restored"

    def click(button):
        """A user's click: the button must be enabled and visible, as for a real mouse click."""
        assert button.enabled, f"{button.name} is disabled"
        assert qt.QWidget.isVisible(button), f"{button.name} is hidden"
        slicer_app.touched.add(button.name)
        button.click()
        pythonqt.process_events()

    def choose(combo, data):
        """The user picks the entry of `combo` whose data is `data` (Qt emits currentIndexChanged)."""
        assert combo.enabled and qt.QWidget.isVisible(combo), combo.name
        index = combo.findData(data)
        assert index >= 0, (combo.name, data)
        slicer_app.touched.add(combo.name)
        qt.QComboBox.setCurrentIndex(combo, index)
        pythonqt.process_events()

    def type_value(spin, value):
        """The user types `value` into a spin box (Qt emits valueChanged)."""
        assert spin.enabled and qt.QWidget.isVisible(spin), spin.name
        slicer_app.touched.add(spin.name)
        qt.QSpinBox.setValue(spin, value)
        pythonqt.process_events()

    def load_volume(name="CT"):
        volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(TESTDATA / "MedSAMLiteTestVolume.nrrd"), name, 0, None)
        assert volume is not None
        return volume

    # -- the panel opens as in Slicer ------------------------------------------------------------------
    def test_the_qt_profile_is_the_one_asked_for():
        """make test-qt5 runs on Qt 5.15 (Slicer 5.6 to 5.12), the main venv on Qt 6."""
        asked = os.environ.get("MEDSAMLITE_QT")
        if asked == "PySide2":
            assert pythonqt.BINDING == "PySide2" and pythonqt.QT_VERSION == (5, 15)
        elif asked == "PySide6":
            assert pythonqt.BINDING == "PySide6" and pythonqt.QT_VERSION >= (6, 0)

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
        with pytest.raises(AttributeError, match="creating new attributes on C\\+\\+ objects is not allowed"):
            button.enable = False  # a typo: PythonQt refuses new attributes on C++ objects
        with pytest.raises(AttributeError):
            gui.ui.volumeSelector.nodes()  # public in C++ but not Q_INVOKABLE: PythonQt does not show it
        with pytest.raises(AttributeError, match="no signal"):
            gui.ui.volumeSelector.connect("currentNodeChanged(vtkMRMLVolumeNode*)", lambda: None)

    STAND_INS = ("ctkCollapsibleButton", "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget",
                 "qMRMLSegmentEditorWidget", "qMRMLSliceWidget", "qSlicerLayoutManager", "qSlicerScriptedLoadableModuleWidget")

    def test_stand_ins_show_no_member_the_real_classes_lack_in_some_release():
        """slicer_api.json (generated from Slicer's and CTK's sources at 5.6 to 5.12): a stand-in's public
        members, signals and properties are all shown by PythonQt in every release."""
        for name in STAND_INS:
            cls = getattr(slicer_app, name)
            assert cls.pythonqt_class == name and cls.pythonqt_shown == slicer_app.shown(name)
            own = set()
            for klass in cls.__mro__:
                if klass.__module__ != "slicer_app":
                    continue
                own |= {attr for attr in vars(klass) if not attr.startswith("_") and attr not in ("pythonqt_signals", "pythonqt_slots",
                        "pythonqt_shown", "pythonqt_class") and not hasattr(pythonqt._qt_base(cls), attr)}
            own |= {signature.split("(")[0] for signature in getattr(cls, "pythonqt_signals", {})}
            extra = own - cls.pythonqt_shown
            assert not extra, f"{name} shows {sorted(extra)}, which PythonQt does not show of the real class in every release"

    def test_pythonqt_rules_the_module_must_follow(gui):
        ui = gui.ui
        with pytest.raises(AttributeError, match="setCollapsed"):
            ui.inputsCollapsibleButton.setCollapsed(True)  # a plain C++ method: neither slot nor Q_INVOKABLE
        ui.inputsCollapsibleButton.collapsed = False  # the property is the way
        orientation = slicer.app.layoutManager().sliceWidget("Red").sliceOrientation
        assert isinstance(orientation, str)  # a Q_PROPERTY comes before the method of the same name
        with pytest.raises(TypeError):
            slicer.app.layoutManager().sliceWidget("Red").sliceOrientation()
        timer = qt.QTimer()
        with pytest.raises(AttributeError, match="creating new attributes"):
            timer.singleShot = True  # PythonQt hides this property
        pythonqt.file_dialog_answers.append("")
        with pytest.raises(TypeError, match="QWidget"):
            qt.QFileDialog.getOpenFileName(gui, "caption")  # the Python widget object is no QWidget*
        pythonqt.file_dialog_answers.clear()
        with pytest.raises(TypeError):
            qt.QFileDialog.getOpenFileName(None, "caption", "", "", None, 0, "one too many")
        with pytest.raises(TypeError, match="QWidget"):
            qt.QMessageBox.question(gui, "MedSAMLite", "Go on?")
        slicer_app.answers.append(False)
        assert qt.QMessageBox.question(slicer.util.mainWindow(), "MedSAMLite", "Go on?") == qt.QMessageBox.No
        assert slicer_app.messages[-1] == ("question", "Go on?")
        slicer_app.messages.clear()

    def test_the_ui_loader_reads_what_qts_own_loader_reads(tmp_path):
        """Property types Designer writes and dynamic (stdset="0") properties, as QUiLoader sets them."""
        (tmp_path / "t.ui").write_text("""<?xml version="1.0" encoding="UTF-8"?>
<ui version="4.0"><class>T</class>
 <widget class="QWidget" name="T"><layout class="QVBoxLayout" name="l">
  <item><widget class="QPushButton" name="b">
   <property name="text"><string>go</string></property>
   <property name="sizePolicy"><sizepolicy hsizetype="Expanding" vsizetype="Fixed"><horstretch>1</horstretch><verstretch>0</verstretch></sizepolicy></property>
   <property name="font"><font><pointsize>11</pointsize><bold>true</bold></font></property>
   <property name="cursor"><cursorShape>PointingHandCursor</cursorShape></property>
   <property name="icon"><iconset><normaloff>:/Icons/missing.png</normaloff>:/Icons/missing.png</iconset></property>
   <property name="iconSize"><size><width>16</width><height>16</height></size></property>
   <property name="SlicerParameterName" stdset="0"><string>Backend</string></property>
  </widget></item>
  <item><widget class="QDoubleSpinBox" name="d"><property name="maximum"><double>2.5</double></property></widget></item>
  <item><widget class="qMRMLNodeComboBox" name="n"><property name="nodeTypes"><stringlist><string>vtkMRMLScalarVolumeNode</string></stringlist></property></widget></item>
 </layout></widget></ui>""")
        widget = qt.QUiLoader().load(qt.QFile(str(tmp_path / "t.ui")))
        button = widget.findChild(pythonqt.QtWidgets.QPushButton, "b")
        assert button.text == "go" and button.font.bold() and button.sizePolicy.horizontalStretch() == 1
        assert pythonqt.QtCore.QObject.property(button, "SlicerParameterName") == "Backend"
        selector = widget.findChild(slicer_app.qMRMLNodeComboBox, "n")
        assert selector.nodeTypes == ("vtkMRMLScalarVolumeNode",)  # a QStringList is a tuple in PythonQt
        widget.deleteLater()

    def test_an_exception_in_a_vtk_observer_fails_the_test(gui):
        import vtk

        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")

        def observer(caller, event):
            raise RuntimeError("in an observer")

        tag = node.AddObserver(vtk.vtkCommand.ModifiedEvent, observer)
        node.Modified()
        node.RemoveObserver(tag)
        errors = pythonqt.take_errors()
        assert [str(e) for e in errors] == ["in an observer"]

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
        saved = sys.modules["MedSAMLite"], slicer.modules.medsamlite, slicer.modules.MedSAMLiteWidget
        try:
            with pytest.raises(NameError, match="'qt'"):
                slicer_app.open_module(path=folder / "MedSAMLite.py")
        finally:
            broken = slicer.modules.medsamlite.widgetRepresentation()
            sys.modules["MedSAMLite"], slicer.modules.medsamlite, slicer.modules.MedSAMLiteWidget = saved
            broken.findChild(slicer_app.qMRMLWidget, "MedSAMLite").setMRMLScene(None)  # its selectors let go of the scene
            BROKEN.append(broken)  # never collected at a random moment
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

    # -- a scene as a user has it: a CT, an ROI around the brain, a segmentation with another segment ----
    def setup_scene(gui, roi_slices=None):
        """Load the test CT, an ROI around the brain (slices `roi_slices` of the reference), a
        segmentation with a segment "other"; choose them in the panel as a user does; preset "brain"."""
        ui = gui.ui
        volume = load_volume()
        reference = slicer.modules.volumes.logic().AddArchetypeVolume(str(TESTDATA / "MedSAMLiteTestReference.nrrd"), "reference", 1, None)
        reference_mask = slicer.util.arrayFromVolume(reference).copy() > 0
        slicer.mrmlScene.RemoveNode(reference)
        roi_mask = reference_mask.copy()
        if roi_slices is not None:
            keep = np.zeros(len(roi_mask), bool)
            keep[roi_slices] = True
            roi_mask[~keep] = False
        roi = sys.modules["MedSAMLite"].MedSAMLiteTest.roiAroundMask(roi_mask, volume, "box")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        other = segmentation.GetSegmentation().AddEmptySegment("", "other")
        other_mask = np.zeros(reference_mask.shape, np.uint8)
        other_mask[6, 2:8, 2:8] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(other_mask, segmentation, other, volume)
        pythonqt.process_events()
        ui.volumeSelector._user_select(volume)
        ui.roiSelector._user_select(roi)
        ui.segmentationSelector._user_select(segmentation)
        choose(ui.presetComboBox, "brain")
        type_value(ui.emptySlicesSpinBox, 0)
        ui.segmentSelector._user_select("")  # "None": a new segment (the real selector may show a stale ID)
        assert gui.logic.getParameterNode().GetParameter("Preset") == "brain"
        assert gui.logic.getParameterNode().GetParameter("SegmentID") == ""
        return types.SimpleNamespace(volume=volume, roi=roi, segmentation=segmentation, other=other, other_mask=other_mask,
                                     reference=reference_mask, voxels=slicer.util.arrayFromVolume(volume).copy())

    def segment_array(s, segment_id):
        return slicer.util.arrayFromSegmentBinaryLabelmap(s.segmentation, segment_id, s.volume) > 0

    def segment_ids(s):
        return list(s.segmentation.GetSegmentation().GetSegmentIDs())

    def wait_for_run_end(gui, timeout=120):
        pythonqt.run_until(lambda: gui.run is None, timeout)
        worker = gui.logic._running
        pythonqt.run_until(lambda: worker is None or not worker.task.running, timeout)

    def test_place_roi_starts_placing_a_new_roi(gui):
        load_volume()
        before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode")
        click(gui.ui.placeRoiButton)
        assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode") == before + 1
        roi = gui.ui.roiSelector.currentNode()
        assert roi is not None and roi.IsA("vtkMRMLMarkupsROINode")
        assert gui.logic.getParameterNode().GetNodeReference("ROI") is roi
        app_logic = slicer.app.applicationLogic()
        assert app_logic.GetInteractionNode().GetCurrentInteractionMode() == slicer.vtkMRMLInteractionNode.Place
        assert app_logic.GetSelectionNode().GetActivePlaceNodeID() == roi.GetID()

    def test_segment_shows_progress_writes_the_middle_slice_first_then_the_rest(gui):
        s = setup_scene(gui)
        ui = gui.ui
        assert ui.segmentSelector.currentSegmentID() == ""  # "None": a new segment
        click(ui.segmentButton)
        assert ui.segmentButton.text == "Cancel" and ui.segmentButton.enabled
        assert qt.QProgressBar.isVisible(ui.progressBar) and ui.progressBar.maximum == len(s.reference)
        pythonqt.run_until(lambda: len(segment_ids(s)) == 2 and segment_array(s, segment_ids(s)[1]).any())
        new = segment_ids(s)[1]
        first = np.flatnonzero(segment_array(s, new).any(axis=(1, 2))).tolist()
        slices = np.flatnonzero(s.reference.any(axis=(1, 2)))
        assert len(first) == 1 and abs(first[0] - (slices[0] + slices[-1]) / 2) <= 0.5, first
        wait_for_run_end(gui)
        result = segment_array(s, new)
        assert ui.segmentButton.text == "Segment" and not qt.QProgressBar.isVisible(ui.progressBar)
        assert ui.progressBar.value == ui.progressBar.maximum
        assert result.any(axis=(1, 2)).sum() > 3
        dice = 2 * (result & s.reference).sum() / (result.sum() + s.reference.sum())
        assert dice > 0.8, dice
        assert ui.statusLabel.text.startswith("litemedsam 3D")
        np.testing.assert_array_equal(segment_array(s, s.other), s.other_mask > 0)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(s.volume), s.voxels)
        assert ui.segmentSelector.currentSegmentID() == ""  # still "None": the next Segment makes a new segment

    def test_cancel_puts_the_segment_back(gui):
        s = setup_scene(gui)
        ui = gui.ui
        ui.segmentSelector._user_select(s.other)
        assert gui.logic.getParameterNode().GetParameter("SegmentID") == s.other
        click(ui.segmentButton)
        pythonqt.run_until(lambda: not np.array_equal(segment_array(s, s.other), s.other_mask > 0))
        assert gui.run is not None, "finished before Cancel could be clicked"
        click(ui.segmentButton)  # Cancel
        wait_for_run_end(gui)
        np.testing.assert_array_equal(segment_array(s, s.other), s.other_mask > 0)
        assert "cancelled" in ui.statusLabel.text and ui.segmentButton.text == "Segment"
        assert segment_ids(s) == [s.other]

    def test_an_error_while_it_runs_stops_the_run_and_puts_the_segment_back(gui, monkeypatch):
        s = setup_scene(gui)
        gui.ui.segmentSelector._user_select(s.other)
        real_poll, failures = gui.logic.poll, []

        def poll(run):  # writing the first partial result fails (e.g. out of memory)
            if not failures and not np.array_equal(segment_array(s, s.other), s.other_mask > 0):
                failures.append(run)
                raise MemoryError("cannot allocate the segment")
            return real_poll(run)

        monkeypatch.setattr(gui.logic, "poll", poll)
        click(gui.ui.segmentButton)
        wait_for_run_end(gui)
        assert failures and not failures[0].task.running  # the worker was stopped, not orphaned
        np.testing.assert_array_equal(segment_array(s, s.other), s.other_mask > 0)
        errors = [m for m in slicer_app.messages if m[0] == "error"]
        assert len(errors) == 1 and "cannot allocate the segment" in errors[0][1]
        assert gui.ui.segmentButton.text == "Segment"

    def test_a_second_structure_goes_into_a_new_segment_and_the_first_stays(gui):
        s = setup_scene(gui, roi_slices=[5, 6, 7])
        click(gui.ui.segmentButton)
        wait_for_run_end(gui)
        first = segment_ids(s)[1]
        first_mask = segment_array(s, first)
        assert first_mask.any()
        s.roi.SetCenter(*np.asarray(s.roi.GetCenter()) + np.array([0.0, 0.0, 12.0]))  # the user moves the box
        click(gui.ui.segmentButton)
        wait_for_run_end(gui)
        assert len(segment_ids(s)) == 3, "the second Segment did not make a new segment"
        np.testing.assert_array_equal(segment_array(s, first), first_mask)
        assert segment_array(s, segment_ids(s)[2]).any()

    def test_undo_with_the_segment_editor_open(gui):
        s = setup_scene(gui, roi_slices=[6])
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(s.segmentation)  # the user edits this segmentation in the Segment Editor
        gui.ui.segmentSelector._user_select(s.other)
        try:
            click(gui.ui.segmentButton)
            wait_for_run_end(gui)
            assert segment_array(s, s.other).sum() > s.other_mask.sum()
            editor.undo()  # Ctrl+Z in the Segment Editor: one step undoes the whole Segment
            np.testing.assert_array_equal(segment_array(s, s.other), s.other_mask > 0)
        finally:
            editor.setSegmentationNode(None)

    def test_undo_with_the_segment_editor_closed(gui):
        s = setup_scene(gui, roi_slices=[6])
        gui.ui.segmentSelector._user_select(s.other)
        click(gui.ui.segmentButton)
        wait_for_run_end(gui)
        assert segment_array(s, s.other).sum() > s.other_mask.sum()
        click(gui.ui.undoButton)  # Slicer's scene undo is off: the panel's Undo takes the Segment back
        np.testing.assert_array_equal(segment_array(s, s.other), s.other_mask > 0)
        assert gui.ui.statusLabel.text == "The last Segment is undone."
        gui.ui.segmentSelector._user_select("")
        click(gui.ui.segmentButton)  # a new segment, then an edit of it: Undo refuses, nothing changes
        wait_for_run_end(gui)
        new = segment_ids(s)[1]
        edited = segment_array(s, new).astype(np.uint8)
        edited[tuple(np.argwhere(edited)[0])] = 0  # the user erases a voxel of the result
        slicer.util.updateSegmentBinaryLabelmapFromArray(edited, s.segmentation, new, s.volume)
        click(gui.ui.undoButton)
        assert gui.ui.statusLabel.text.startswith("Nothing to undo")
        np.testing.assert_array_equal(segment_array(s, new), edited > 0)

    def test_scene_close_during_a_run(gui):
        s = setup_scene(gui)
        click(gui.ui.segmentButton)
        pythonqt.run_until(lambda: len(segment_ids(s)) == 2)
        assert gui.run is not None
        slicer_app.close_scene()  # File > Close Scene while it runs: no wait, no error, a fresh panel
        pythonqt.process_events()
        assert gui.run is None and gui.ui.segmentButton.text == "Segment" and not gui.ui.segmentButton.enabled
        assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
        wait_for_run_end(gui)

    def test_reload_during_a_run_puts_the_segment_back_and_reloads_the_helper_package(panel, gui):
        s = setup_scene(gui)
        gui.ui.segmentSelector._user_select(s.other)
        click(gui.ui.segmentButton)
        pythonqt.run_until(lambda: not np.array_equal(segment_array(s, s.other), s.other_mask > 0))
        helper, client = sys.modules["MedSAMLiteLib"], sys.modules["MedSAMLiteLib.engine.client"]
        engine = client.running()
        assert engine is not None and engine.alive
        gui.onReload()  # the Reload button of the developer section
        new = panel.self()
        assert new is not gui and sys.modules["MedSAMLiteLib"] is not helper
        assert not engine.alive and client.running() is None  # the engine with the old code is stopped
        np.testing.assert_array_equal(segment_array(s, s.other), s.other_mask > 0)
        assert new.ui.volumeSelector.currentNode() is s.volume  # the new panel shows the scene's parameters
        assert new.ui.segmentButton.text == "Segment" and new.ui.segmentButton.enabled
        wait_for_run_end(gui)

    def test_exit_stops_watching_the_roi_and_enter_resumes(panel, gui):
        s = setup_scene(gui, roi_slices=[6])
        pythonqt.run_for(0.7)  # the prefetch timer of the set-up fires
        panel.exit()
        s.roi.SetCenter(*np.asarray(s.roi.GetCenter()) + 3.0)
        assert not gui.prefetchTimer.active and gui.prefetchTask is None
        panel.enter()
        s.roi.SetCenter(*np.asarray(s.roi.GetCenter()) - 3.0)
        assert gui.prefetchTimer.active  # moving the ROI prefetches again
        assert gui.ui.roiSelector.currentNode() is s.roi

    # -- every control and the parameter node, both ways (a lost connect or a lost update fails here) ----
    def test_each_control_reaches_the_parameter_node_and_back(gui):
        ui = gui.ui
        volume, other_volume = load_volume("CT"), load_volume("CT 2")
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
        other_roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box 2")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
        other_segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg 2")
        first = segmentation.GetSegmentation().AddEmptySegment("", "first")
        second = segmentation.GetSegmentation().AddEmptySegment("", "second")
        pythonqt.process_events()
        node = gui.logic.getParameterNode()
        get = node.GetParameter
        # control -> parameter node
        for selector, reference, value in ((ui.volumeSelector, "InputVolume", volume), (ui.roiSelector, "ROI", roi),
                                           (ui.segmentationSelector, "Segmentation", segmentation)):
            selector._user_select(value)
            assert node.GetNodeReference(reference) is value, reference
        ui.segmentSelector._user_select(second)
        assert get("SegmentID") == second
        for combo, key in ((ui.backendComboBox, "Backend"), (ui.presetComboBox, "Preset"), (ui.modeComboBox, "Mode")):
            for i in range(combo.count):
                choose(combo, combo.itemData(i))
                assert get(key) == combo.itemData(i), (key, i)
        type_value(ui.emptySlicesSpinBox, 7)
        assert get("EmptySliceLimit") == "7"
        for expected in ("true", "false"):
            click(ui.zoomCheckBox)
            assert get("Zoom") == expected
        # parameter node -> controls (a saved scene restored, another panel, a script)
        node.SetNodeReferenceID("InputVolume", other_volume.GetID())
        node.SetNodeReferenceID("ROI", other_roi.GetID())
        node.SetParameter("SegmentID", first)
        assert ui.volumeSelector.currentNode() is other_volume and ui.roiSelector.currentNode() is other_roi
        assert ui.segmentSelector.currentSegmentID() == first
        node.SetNodeReferenceID("Segmentation", other_segmentation.GetID())
        assert ui.segmentationSelector.currentNode() is other_segmentation
        for combo, key, value in ((ui.backendComboBox, "Backend", ui.backendComboBox.itemData(1)), (ui.presetComboBox, "Preset", "lung"),
                                  (ui.modeComboBox, "Mode", "3d")):
            node.SetParameter(key, value)
            assert combo.currentData == value, key
        node.SetParameter("EmptySliceLimit", "5")
        assert ui.emptySlicesSpinBox.value == 5
        node.SetParameter("Zoom", "true")
        assert ui.zoomCheckBox.checked
        node.SetParameter("Zoom", "false")
        assert not ui.zoomCheckBox.checked

    def test_collapsible_sections_open_and_close(gui):
        sections = [getattr(gui.ui, name) for name in sorted(vars(gui.ui)) if name.endswith("CollapsibleButton")]
        assert len(sections) >= 4  # inputs, segment, corrections, models: a new section is covered by itself
        for button in sections:
            was = button.collapsed
            click(button)
            assert button.collapsed != was, button.name
            click(button)
            assert button.collapsed == was, button.name

    def test_download_with_the_weights_in_the_cache(gui):
        ui = gui.ui
        ui.modelsCollapsibleButton.collapsed = False
        try:
            click(ui.downloadButton)
            pythonqt.run_until(lambda: gui.modelTask is None, 120)
            assert ui.statusLabel.text.startswith("LiteMedSAM weights ready: "), ui.statusLabel.text
            assert ui.downloadButton.text != "Cancel" and slicer_app.messages == []
        finally:
            ui.modelsCollapsibleButton.collapsed = True

    # -- the Red view's slice: ROI on current slice and 2D mode -------------------------------------------
    def red(normal, transverse, position):
        node = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        node.SetSliceToRASByNTP(*normal, *transverse, *position, 0)
        node.UpdateMatrices()
        return node

    def corners_ijk(roi, volume):
        """The ROI's 8 corners as continuous (i, j, k) voxel coordinates of `volume` (no transforms here)."""
        m = slicer.util.arrayFromVTKMatrix(roi.GetObjectToWorldMatrix())
        half = np.asarray(roi.GetSize()) / 2
        local = np.array([[sx, sy, sz, 1.0] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * np.r_[half, 1.0]
        ras_to_ijk = vtk_matrix(volume, "GetRASToIJKMatrix")
        return (ras_to_ijk @ m @ local.T).T[:, :3]

    def vtk_matrix(node, getter):
        import vtk

        matrix = vtk.vtkMatrix4x4()
        getattr(node, getter)(matrix)
        return slicer.util.arrayFromVTKMatrix(matrix)

    def slice_centre_z(volume, k):
        return (vtk_matrix(volume, "GetIJKToRASMatrix") @ np.array([0, 0, k, 1.0]))[2]

    @pytest.fixture
    def slab(gui):
        s = setup_scene(gui, roi_slices=[4, 5, 6, 7, 8])
        s.ijk = corners_ijk(s.roi, s.volume)
        return s

    def flattened(gui, s, k):
        """ROI on current slice clicked: the ROI is one slice (k) thick with the same rows and columns."""
        click(gui.ui.roiOnSliceButton)
        after = corners_ijk(s.roi, s.volume)
        assert np.all(np.abs(after[:, 2] - k) < 0.5), after[:, 2]
        np.testing.assert_allclose(after[:, :2].min(axis=0), s.ijk[:, :2].min(axis=0), atol=1e-3)
        np.testing.assert_allclose(after[:, :2].max(axis=0), s.ijk[:, :2].max(axis=0), atol=1e-3)
        assert slicer_app.messages == []

    def test_roi_on_current_slice_with_red_axial(gui, slab):
        centre = slab.roi.GetCenterWorld()
        red((0, 0, 1), (1, 0, 0), (centre[0] + 40, centre[1] - 30, slice_centre_z(slab.volume, 5) + 1.0))
        flattened(gui, slab, 5)

    def test_roi_on_current_slice_with_red_oblique_takes_the_slice_it_crosses_at_the_roi(gui, slab):
        centre = np.asarray(slab.roi.GetCenterWorld())
        tilt = np.radians(20)
        # a plane through a point 20 mm anterior of the ROI at slice 7, tilted 20 degrees about R-L:
        # at the ROI it lies 20 mm * tan(20 deg) = 7.3 mm (1.8 slices) lower, in slice 5
        position = (centre[0], centre[1] + 20.0, slice_centre_z(slab.volume, 7))
        red((0, -np.sin(tilt), np.cos(tilt)), (1, 0, 0), position)
        flattened(gui, slab, 5)

    @pytest.mark.parametrize("normal, transverse", [((1, 0, 0), (0, 1, 0)), ((0, 1, 0), (1, 0, 0))], ids=["sagittal", "coronal"])
    def test_roi_on_current_slice_refuses_a_sagittal_or_coronal_red_view(gui, slab, normal, transverse):
        red(normal, transverse, slab.roi.GetCenterWorld())
        click(gui.ui.roiOnSliceButton)
        assert len(slicer_app.messages) == 1 and "show an axial slice in the Red view" in slicer_app.messages[0][1]
        assert "\n" not in slicer_app.messages[0][1]
        np.testing.assert_allclose(corners_ijk(slab.roi, slab.volume), slab.ijk, atol=1e-4)  # unchanged

    def test_roi_on_current_slice_with_a_rotated_roi_keeps_its_extent_in_the_slice(gui, slab):
        import vtk

        transform = vtk.vtkTransform()
        transform.Translate(*slab.roi.GetCenter())
        transform.RotateZ(30)
        transform.RotateX(10)
        slab.roi.SetAndObserveObjectToNodeMatrix(transform.GetMatrix())
        slab.ijk = corners_ijk(slab.roi, slab.volume)
        red((0, 0, 1), (1, 0, 0), (0, 0, slice_centre_z(slab.volume, 6)))
        flattened(gui, slab, 6)
        after = corners_ijk(slab.roi, slab.volume)
        assert len(np.unique(np.round(after[:, 0], 3))) == 2  # aligned with the volume's slices

    def test_2d_mode_segments_the_red_slice(gui, slab):
        choose(gui.ui.modeComboBox, "2d")
        centre = slab.roi.GetCenterWorld()
        red((0, 0, 1), (1, 0, 0), (centre[0], centre[1], slice_centre_z(slab.volume, 5)))
        click(gui.ui.segmentButton)
        wait_for_run_end(gui)
        new = segment_ids(slab)[1]
        assert np.flatnonzero(segment_array(slab, new).any(axis=(1, 2))).tolist() == [5]
        red((1, 0, 0), (0, 1, 0), centre)  # sagittal: no Segment, one line
        click(gui.ui.segmentButton)
        assert gui.run is None and len(segment_ids(slab)) == 2
        assert "show an axial slice in the Red view" in slicer_app.messages[-1][1]

    # -- key-slice corrections ------------------------------------------------------------------------------
    def key_rows(gui):
        return [gui.ui.keySlicesList.item(i).text() for i in range(gui.ui.keySlicesList.count)]

    def test_correct_not_on_this_slice_the_key_slices_undo_and_cancel(gui, slab):
        ui = gui.ui
        assert not ui.correctButton.enabled and not ui.notHereButton.enabled  # no 3D result yet
        click(ui.segmentButton)
        wait_for_run_end(gui)
        new = segment_ids(slab)[1]
        first = segment_array(slab, new)
        assert first[4:9].any(axis=(1, 2)).all() and key_rows(gui)[0].startswith("slice 6: box")
        assert len(key_rows(gui)) == 1 and not ui.removeKeySliceButton.enabled
        centre = slab.roi.GetCenterWorld()
        red((0, 0, 1), (1, 0, 0), (centre[0], centre[1], slice_centre_z(slab.volume, 8)))
        click(ui.notHereButton)
        wait_for_run_end(gui)
        after = segment_array(slab, new)
        assert not after[8:].any() and np.array_equal(after[:8], first[:8])
        assert key_rows(gui)[1] == "slice 8: not on this slice" and ui.statusLabel.text.startswith("litemedsam correction")
        click(ui.undoButton)  # the correction, taken back exactly, and its key slice with it
        np.testing.assert_array_equal(segment_array(slab, new), first)
        assert len(key_rows(gui)) == 1
        red((0, 0, 1), (1, 0, 0), (centre[0], centre[1], slice_centre_z(slab.volume, 5)))
        click(ui.correctButton)  # the ROI's box on slice 5 becomes a key slice
        wait_for_run_end(gui)
        np.testing.assert_array_equal(segment_array(slab, new)[6:], first[6:])  # slices 6.. keep the ROI's key slice
        assert key_rows(gui)[0].startswith("slice 5: box") and key_rows(gui)[1].startswith("slice 6: box")
        red((0, 0, 1), (1, 0, 0), (centre[0], centre[1], slice_centre_z(slab.volume, 8)))
        ui.keySlicesList.setCurrentRow(0)
        click(ui.showKeySliceButton)  # the Red view goes to slice 5
        red_node = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        assert abs(red_node.GetSliceToRAS().GetElement(2, 3) - slice_centre_z(slab.volume, 5)) < 1e-3
        click(ui.removeKeySliceButton)
        wait_for_run_end(gui)
        np.testing.assert_array_equal(segment_array(slab, new), first)  # one key slice again: the first result
        assert len(key_rows(gui)) == 1
        red((0, 0, 1), (1, 0, 0), (centre[0], centre[1], slice_centre_z(slab.volume, 4)))
        click(ui.correctButton)
        assert ui.segmentButton.text == "Cancel"
        click(ui.segmentButton)  # Cancel: the segment and its key slices stay as they were
        wait_for_run_end(gui)
        np.testing.assert_array_equal(segment_array(slab, new), first)
        assert len(key_rows(gui)) == 1 and "cancelled" in ui.statusLabel.text

    # -- models: the backend dropdown, import, cache -------------------------------------------------------
    def backend_texts(gui):
        combo = gui.ui.backendComboBox
        return {combo.itemData(i): combo.itemText(i) for i in range(combo.count)}

    def test_backend_states_and_importing_a_checkpoint(gui, tmp_path, monkeypatch):
        genuine = Path.home() / ".cache" / "medsamlite" / "weights" / "litemedsam" / "lite_medsam.pth"
        if os.environ.get("MEDSAMLITE_HOME"):
            genuine = Path(os.environ["MEDSAMLITE_HOME"]) / "weights" / "litemedsam" / "lite_medsam.pth"
        assert genuine.is_file(), "needs the LiteMedSAM weights: medsamlite fetch-weights"
        monkeypatch.setenv("MEDSAMLITE_HOME", str(tmp_path / "cache"))  # a user with an empty cache
        ui = gui.ui
        ui.modelsCollapsibleButton.collapsed = False
        click(ui.clearCacheButton)
        assert slicer_app.messages[-1][0] == "question"
        texts, status = backend_texts(gui), ui.statusLabel.text
        assert texts["litemedsam"] == "LiteMedSAM (will download 39 MB)"
        assert texts["medficient_l0"].endswith("(needs a checkpoint (Import…))")
        pythonqt.file_dialog_answers.append("")  # the user cancels the file dialog
        click(ui.importCheckpointButton)
        assert backend_texts(gui) == texts and ui.statusLabel.text == status
        bad = tmp_path / "notes.pth"
        bad.write_text("not a checkpoint")
        pythonqt.file_dialog_answers.append(str(bad))
        click(ui.importCheckpointButton)
        pythonqt.run_until(lambda: gui.modelTask is None)
        assert slicer_app.messages[-1][0] == "error" and "\n" not in slicer_app.messages[-1][1]
        assert backend_texts(gui) == texts
        pythonqt.file_dialog_answers.append(str(genuine))
        click(ui.importCheckpointButton)
        click(ui.importCheckpointButton)  # Cancel at once: nothing imported
        assert gui.modelTask is None and ui.statusLabel.text == "import cancelled" and backend_texts(gui) == texts
        pythonqt.file_dialog_answers.append(str(genuine))
        click(ui.importCheckpointButton)
        assert ui.importCheckpointButton.text == "Cancel"  # it runs in the engine: the panel stays usable
        pythonqt.run_until(lambda: gui.modelTask is None, 300)
        assert ui.importCheckpointButton.text.startswith("Import checkpoint")
        assert ui.statusLabel.text == "litemedsam: checkpoint imported and converted"
        assert backend_texts(gui)["litemedsam"] == "LiteMedSAM (ready)"
        click(ui.showCacheButton)
        assert pythonqt.opened_urls[-1] == qt.QUrl.fromLocalFile(str(tmp_path / "cache")).toString()
        click(ui.showEngineLogButton)  # Models -> Show engine log: the running engine's log file
        assert gui.logic.engineLog().is_file()
        assert pythonqt.opened_urls[-1] == qt.QUrl.fromLocalFile(str(gui.logic.engineLog())).toString()
        ui.modelsCollapsibleButton.collapsed = True

    if not WITHOUT_OPENVINO:

        def test_zz_every_control_a_user_can_touch_was_exercised(request, gui):
            """Buttons, check boxes, drop-downs, spin boxes and selectors of the .ui: each was used by a test
            above as a user would (click, choose, type). Only meaningful when the whole file ran."""
            if len(request.session.items) < 20:
                pytest.skip("only with the whole file")
            widgets = pythonqt.QtWidgets  # the Qt base classes (qt.X are PythonQt's subclasses, one per class)
            kinds = (widgets.QAbstractButton, widgets.QComboBox, widgets.QAbstractSpinBox, slicer_app.qMRMLNodeComboBox,
                     slicer_app.qMRMLSegmentSelectorWidget)
            controls = {pythonqt.QtCore.QObject.objectName(w) for w in widgets.QWidget.findChildren(gui.uiWidget, widgets.QWidget)
                        if isinstance(w, kinds)}
            controls = {name for name in controls if name and hasattr(gui.ui, name)}  # the .ui's own, not a stand-in's inner widget
            assert controls, "no controls found"
            untouched = sorted(controls - slicer_app.touched - {"installDependenciesButton"})  # that one: without openvino
            assert untouched == [], f"no test uses {untouched}"

    if not WITHOUT_OPENVINO:

        def test_without_openvino_the_panel_opens_says_so_and_installs():
            env = dict(os.environ, MEDSAMLITE_PANEL_PROCESS="1", MEDSAMLITE_PANEL_WITHOUT_OPENVINO="1")
            result = subprocess.run([sys.executable, "-c", PYTEST_CHILD, "-q", "-p", "no:cacheprovider", __file__, "-k", "missing_openvino"],
                                    env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout[-8000:] + result.stderr[-3000:]

    else:

        @pytest.mark.parametrize("release", ["5.6", "5.12"])
        def test_missing_openvino(gui, release, monkeypatch):
            """Slicer 5.6 to 5.10: slicer.util.pip_install(pip arguments); 5.12: slicer.packaging.pip_ensure.
            Both stand-ins take only the parameters their release has (slicer_api.json)."""
            HIDDEN.update({"openvino", "cv2"})  # as when the panel opened (the other release's run installed them)
            ui = gui.ui
            gui.updateDependencies()
            gui.refreshBackends()
            assert "openvino" in ui.dependencyLabel.text and qt.QWidget.isVisible(ui.installDependenciesButton)
            assert set(gui.logic.missingDependencies()) == {"openvino", "opencv-python-headless"}
            s = setup_scene(gui, roi_slices=[6])
            assert not ui.segmentButton.enabled  # nothing to segment with
            assert all("openvino" in text or "checkpoint" in text or "download" in text for text in backend_texts(gui).values())
            calls, paths = [], []

            def pip_install(requirements, **kwargs):  # the stand-in pip: reads its files, "installs" by un-hiding
                args = requirements.split() if isinstance(requirements, str) else list(requirements)
                files = {args[i]: Path(args[i + 1]).read_text() for i in range(len(args) - 1) if args[i] in ("-r", "-c")}
                calls.append(files)
                paths.append(Path(args[args.index("-c") + 1]))
                HIDDEN.clear()

            if release == "5.12":
                def pip_ensure(*args, **kwargs):
                    slicer_app.check_call("slicer.packaging", "pip_ensure", args, kwargs, releases=["5.12"])
                    calls.append({"-r": "\n".join(str(r) for r in args[0]), "-c": Path(kwargs["constraints"]).read_text()})
                    paths.append(Path(kwargs["constraints"]))
                    HIDDEN.clear()

                def load_requirements(*args, **kwargs):
                    slicer_app.check_call("slicer.packaging", "load_requirements", args, kwargs, releases=["5.12"])
                    return [line for line in Path(args[0]).read_text().splitlines() if line.strip() and not line.startswith("#")]

                monkeypatch.setattr(slicer, "packaging", types.SimpleNamespace(pip_ensure=pip_ensure, load_requirements=load_requirements),
                                    raising=False)
            else:
                monkeypatch.setattr(slicer.util, "pip_install", pip_install)
            click(ui.installDependenciesButton)
            assert slicer_app.messages[0][0] == "question" and "openvino" in slicer_app.messages[0][1]
            assert len(calls) == 1 and "openvino" in calls[0]["-r"]  # what is missing, with
            assert f"numpy=={np.__version__}" in calls[0]["-c"].splitlines()  # what Slicer has, pinned
            assert not [line for line in calls[0]["-c"].splitlines() if line.startswith("openvino=")]
            assert not paths[0].exists()  # the constraints file went with the install
            assert gui.logic.missingDependencies() == []
            assert not qt.QWidget.isVisible(ui.installDependenciesButton) and ui.dependencyLabel.text == ""
            assert ui.segmentButton.enabled and s.volume is ui.volumeSelector.currentNode()
            assert "openvino" not in backend_texts(gui)["litemedsam"]
