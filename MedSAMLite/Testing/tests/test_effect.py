"""The Segment Editor effect "MedSAMLite", registered by the module at start-up and driven as a user would:
boxes dragged in the Red, Yellow and Green views (mouse events at view xy, converted by the effect through
the real slice nodes' XYToRAS), the preview, Apply through the editor with its masking and overwrite
settings (Slicer's own vtkSlicerSegmentEditorLogic does the edit), Undo, Propagate, a second box as a key
slice of the propagated object, Esc, and the options shared with the module panel. The editor and the effect
adaptor are stand-ins limited to what Slicer's headers show (Testing/segment_editor.py); a process of its
own, as test_panel.py.
"""
import os
import subprocess
import sys

CHILD = os.environ.get("MEDSAMLITE_EFFECT_PROCESS") == "1"

# pytest in a child process, left with os._exit once the tests are over (as test_panel.py, which says why)
PYTEST_CHILD = "import os, sys, pytest; rc = int(pytest.main(sys.argv[1:])); sys.stdout.flush(); sys.stderr.flush(); os._exit(rc)"

if not CHILD:

    def test_effect_in_its_own_process():
        env = dict(os.environ, MEDSAMLITE_EFFECT_PROCESS="1")
        result = subprocess.run([sys.executable, "-X", "faulthandler", "-c", PYTEST_CHILD, "-q", "-p", "no:cacheprovider", "-rA",
                                 "-W", "error::UserWarning", __file__], env=env, capture_output=True, text=True, timeout=1200)
        print(result.stdout[-6000:])
        assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]

else:
    import re
    from pathlib import Path

    import numpy as np
    import pytest

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import pythonqt  # noqa: E402
    import segment_editor  # noqa: E402
    import slicer_app  # noqa: E402

    slicer_app.install()
    import qt  # noqa: E402
    import slicer  # noqa: E402
    import vtk  # noqa: E402

    SIZE, CENTRE, RADIUS = 32, 16, 8
    # An LPS-stored volume (as DICOM gives): i to the patient's left, j posterior, k superior, 1 mm voxels.
    IJK_TO_RAS = np.array([[-1.0, 0, 0, 30], [0, -1.0, 0, 25], [0, 0, 1.0, -15], [0, 0, 0, 1]])
    VIEWS = {"Red": ("Axial", 0), "Yellow": ("Sagittal", 2), "Green": ("Coronal", 1)}  # numpy axis (k, j, i) of the normal

    def sphere():
        k, j, i = np.mgrid[:SIZE, :SIZE, :SIZE]
        return (k - CENTRE) ** 2 + (j - CENTRE) ** 2 + (i - CENTRE) ** 2 <= RADIUS**2

    def ras(ijk):
        return (IJK_TO_RAS @ [*ijk, 1.0])[:3]

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    @pytest.fixture
    def scene(closed_scene):
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "phantom")
        image = vtk.vtkImageData()
        image.SetDimensions(SIZE, SIZE, SIZE)
        image.AllocateScalars(vtk.VTK_SHORT, 1)
        volume.SetAndObserveImageData(image)
        volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(IJK_TO_RAS))
        rng = np.random.default_rng(0)
        slicer.util.arrayFromVolume(volume)[:] = np.where(sphere(), 300 + rng.integers(-20, 20, (SIZE,) * 3), -100)
        volume.Modified()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        for name in ("target", "region", "neighbour"):
            segmentation.GetSegmentation().AddEmptySegment(name, name)
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(slicer.mrmlScene)
        presets = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSliceNode")  # Slicer's presets, as a new view gets them
        for view, (orientation, _) in VIEWS.items():
            node = slicer.app.layoutManager().sliceWidget(view).mrmlSliceNode()
            if not node.HasSliceOrientationPreset(orientation):
                node.AddSliceOrientationPreset(orientation, presets.GetSliceOrientationPreset(orientation))
            node.SetDimensions(300, 200, 1)
            node.SetFieldOfView(90.0, 60.0, 1.0)
            assert node.SetOrientation(orientation)
            node.JumpSliceByCentering(*ras((CENTRE, CENTRE, CENTRE)))
            node.UpdateMatrices()
        parameters = closed_scene.self().logic.getParameterNode()
        parameters.SetParameter("Preset", "abdomen")
        parameters.SetParameter("Mode", "2d")
        return {"volume": volume, "segmentation": segmentation}

    @pytest.fixture
    def editor(scene):
        editor = segment_editor.qMRMLSegmentEditorWidget()
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
        editor.setSegmentationNode(scene["segmentation"])
        editor.setSourceVolumeNode(scene["volume"])
        editor.setCurrentSegmentID("target")
        editor.setActiveEffectByName("MedSAMLite")
        assert editor.activeEffect() is not None, "the MedSAMLite effect is not registered"
        yield editor
        editor.setActiveEffectByName("")

    def segments(scene):
        return {s: slicer.util.arrayFromSegmentBinaryLabelmap(scene["segmentation"], s, scene["volume"]).copy() > 0
                for s in ("target", "region", "neighbour")}

    def set_segment(scene, name, mask):
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), scene["segmentation"], name, scene["volume"])

    def xy(view, point):
        """Where a RAS point shows in a view (pixels from its bottom-left), through the slice node's XYToRAS."""
        m = slicer.util.arrayFromVTKMatrix(slicer.app.layoutManager().sliceWidget(view).mrmlSliceNode().GetXYToRAS())
        x, y, z, _ = np.linalg.solve(m, [*point, 1.0])
        assert abs(z) < 1e-4
        return round(x), round(y)

    def drag_around_centre(editor, view, half=10):
        """Drag a box 2 x `half` voxels wide around the sphere's centre on the view's slice."""
        axis = VIEWS[view][1]
        low, high = [CENTRE - half] * 3, [CENTRE + half] * 3
        low[2 - axis] = high[2 - axis] = CENTRE  # (i, j, k) order: the normal's index stays on the slice
        return segment_editor.drag(editor, view, xy(view, ras(low)), xy(view, ras(high)))

    def drag_on_axial_slice(editor, k, low, high):
        """Show axial slice `k` in Red and drag a box there from voxel (i, j) `low` to `high`."""
        slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode().JumpSliceByCentering(*ras((CENTRE, CENTRE, k)))
        return segment_editor.drag(editor, "Red", xy("Red", ras((*low, k))), xy("Red", ras((*high, k))))

    def effect(editor):
        return editor.activeEffect().self()

    def wait_for_result(editor):
        pythonqt.run_until(lambda: effect(editor).run is None, timeout=180)
        assert effect(editor).preview is not None, effect(editor).statusLabel.text

    def preview(editor, scene):
        node = effect(editor).previewNode
        assert node is not None and node.GetHideFromEditors()
        return slicer.util.arrayFromSegmentBinaryLabelmap(node, "preview", scene["volume"]) > 0

    def click(button):
        assert button.enabled, f"{button.text} is disabled"
        button.click()
        pythonqt.process_events()

    def test_the_adaptor_stand_in_shows_no_more_than_slicers_in_every_release():
        """slicer_api.json (qSlicerSegmentEditorAbstractEffect.h and qSlicerSegmentEditorScriptedEffect.h at 5.6 to
        5.12): the adaptor stand-in's public members are all shown by PythonQt in every release."""
        cls = segment_editor.qSlicerSegmentEditorScriptedEffect
        assert cls.pythonqt_shown == slicer_app.shown("qSlicerSegmentEditorScriptedEffect")
        own = {a for a in vars(cls) if not a.startswith("_") and a not in ("pythonqt_slots", "pythonqt_signals", "pythonqt_shown",
               "pythonqt_class", "staticMetaObject") and not hasattr(pythonqt._qt_base(cls), a)}
        assert own - cls.pythonqt_shown == set()
        assert {"modifySelectedSegmentByLabelmap", "xyToRas", "saveStateForUndo", "setPythonSource", "self"} <= cls.pythonqt_shown

    # -- registration and the options ------------------------------------------------------------------
    def test_the_module_registers_the_effect_at_startup(panel):
        names = [e.name for e in slicer.qSlicerSegmentEditorEffectFactory.instance().registeredEffects()]
        assert names == ["MedSAMLite"]
        effect = slicer.qSlicerSegmentEditorEffectFactory.instance().registeredEffects()[0]
        assert effect.pythonSource().endswith("SegmentEditorMedSAMLiteLib/SegmentEditorEffect.py")
        assert effect.perSegment and effect.requireSegments

    def test_options_are_the_module_parameter_node(panel, editor):
        ui, options = panel.self().ui, effect(editor)
        assert options.presetComboBox.currentData == "abdomen" and options.modeComboBox.currentData == "2d"
        assert options.backendComboBox.currentData == "litemedsam"
        assert "(" in options.backendComboBox.currentText  # with its state, as in the module panel
        ui.presetComboBox.currentIndex = ui.presetComboBox.findData("brain")  # the user changes the module panel
        pythonqt.process_events()
        assert options.presetComboBox.currentData == "brain"
        parameters = panel.self().logic.getParameterNode()
        parameters.SetParameter("Mode", "auto")  # the module's "by ROI thickness": 2D for a box
        assert options.modeComboBox.currentData == "2d"
        options.zoomCheckBox.checked = True  # an unrelated change in the effect keeps the module's mode
        pythonqt.process_events()
        assert parameters.GetParameter("Mode") == "auto" and parameters.GetParameter("Zoom") == "true" and ui.zoomCheckBox.checked
        options.modeComboBox.currentIndex = options.modeComboBox.findData("3d")  # ... and the effect's panel
        pythonqt.process_events()
        assert parameters.GetParameter("Mode") == "3d" and ui.modeComboBox.currentData == "3d"
        options.modeComboBox.currentIndex = options.modeComboBox.findData("2d")
        assert parameters.GetParameter("Mode") == "auto"

    # -- a box in each view ----------------------------------------------------------------------------
    @pytest.mark.parametrize("view", sorted(VIEWS))
    def test_a_box_in_each_view_previews_that_slice(editor, scene, view):
        before = segments(scene)
        taken = drag_around_centre(editor, view)
        assert all(taken), "the effect must take the drag (the view would pan or change window/level)"
        assert not effect(editor).applyButton.enabled  # running
        wait_for_result(editor)
        shown = preview(editor, scene)
        axis = VIEWS[view][1]
        on_slice = np.take(shown, CENTRE, axis=axis)
        assert shown.sum() == on_slice.sum(), "the preview lies on the dragged slice only"
        assert dice(on_slice, np.take(sphere(), CENTRE, axis=axis)) > 0.9
        assert all((segments(scene)[s] == before[s]).all() for s in before), "a preview never writes a segment"
        assert effect(editor).applyButton.enabled

    def test_a_click_is_not_a_box(editor, scene):
        point = xy("Red", ras((CENTRE, CENTRE, CENTRE)))
        segment_editor.drag(editor, "Red", point, (point[0] + 2, point[1] + 1))
        assert effect(editor).run is None and effect(editor).preview is None

    def test_a_view_slightly_oblique_segments_the_nearest_voxel_slice(editor, scene):
        """Red tilted 12 degrees about R (through the sphere's centre): the axial voxel slice there, not a resampling."""
        node = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        m = slicer.util.arrayFromVTKMatrix(node.GetSliceToRAS())
        a = np.radians(12)
        m[:3, :3] = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) @ m[:3, :3]
        node.GetSliceToRAS().DeepCopy(slicer.util.vtkMatrixFromArray(m))
        node.UpdateMatrices()
        centre = ras((CENTRE, CENTRE, CENTRE))
        corners = [centre + sx * 10 * m[:3, 0] + sy * 10 * m[:3, 1] for sx, sy in ((-1, -1), (1, 1))]
        segment_editor.drag(editor, "Red", xy("Red", corners[0]), xy("Red", corners[1]))
        wait_for_result(editor)
        shown = preview(editor, scene)
        assert shown.sum() == shown[CENTRE].sum() and dice(shown[CENTRE], sphere()[CENTRE]) > 0.9

    def test_an_oblique_view_far_from_the_voxels_is_refused_in_one_line(editor, scene):
        node = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        rotation = vtk.vtkTransform()
        rotation.RotateX(40)
        node.GetSliceToRAS().DeepCopy(slicer.util.vtkMatrixFromArray(
            slicer.util.arrayFromVTKMatrix(rotation.GetMatrix()) @ slicer.util.arrayFromVTKMatrix(node.GetSliceToRAS())))
        node.UpdateMatrices()
        segment_editor.drag(editor, "Red", (100, 80), (160, 130))
        assert effect(editor).run is None
        assert "oblique" in effect(editor).statusLabel.text and "\n" not in effect(editor).statusLabel.text

    # -- Apply, masking, overwrite, Undo ---------------------------------------------------------------
    def test_apply_respects_the_editable_area_and_overwrite_none_and_undo_restores_exactly(editor, scene):
        region = np.zeros((SIZE,) * 3, bool)
        region[:, :, :CENTRE] = True  # i < CENTRE: the editable area
        neighbour = np.zeros((SIZE,) * 3, bool)
        neighbour[CENTRE - 3 : CENTRE + 4, CENTRE - 4 : CENTRE + 5, CENTRE - 6 : CENTRE + 6] = True  # inside the sphere
        set_segment(scene, "region", region)
        set_segment(scene, "neighbour", neighbour)
        old_target = np.zeros((SIZE,) * 3, bool)
        old_target[CENTRE, 2:5, 2:5] = True  # painted before, outside the editable area too
        old_target[CENTRE, 28:31, 28:31] = True
        set_segment(scene, "target", old_target)
        node = editor.mrmlSegmentEditorNode()
        node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
        node.SetMaskSegmentID("region")
        node.SetOverwriteMode(node.OverwriteNone)
        before = segments(scene)

        drag_around_centre(editor, "Red")
        wait_for_result(editor)
        shown = preview(editor, scene)
        click(effect(editor).applyButton)
        after = segments(scene)
        assert effect(editor).previewNode is None and not effect(editor).applyButton.enabled
        assert (after["target"] == (old_target | (shown & region))).all()  # added where editable, kept elsewhere
        assert (after["target"] & shown & ~region).sum() == 0 and (shown & ~region).sum() > 100
        assert (after["neighbour"] == before["neighbour"]).all() and (after["region"] == before["region"]).all()

        editor.undo()
        restored = segments(scene)
        assert all((restored[s] == before[s]).all() for s in before), "one Apply is one undo step, undone exactly"

    def test_overwrite_all_segments_takes_the_result_out_of_the_others(editor, scene):
        """The contrast to overwrite none: the editor's setting decides, not the effect."""
        neighbour = np.zeros((SIZE,) * 3, bool)
        neighbour[CENTRE - 3 : CENTRE + 4, CENTRE - 4 : CENTRE + 5, CENTRE - 6 : CENTRE + 6] = True
        set_segment(scene, "neighbour", neighbour)
        editor.mrmlSegmentEditorNode().SetOverwriteMode(editor.mrmlSegmentEditorNode().OverwriteAllSegments)
        drag_around_centre(editor, "Yellow")
        wait_for_result(editor)
        shown = preview(editor, scene)
        click(effect(editor).applyButton)
        after = segments(scene)
        assert (after["target"] == shown).all()
        assert (after["neighbour"] == (neighbour & ~shown)).all() and (neighbour & shown).any()

    def test_intensity_range_is_respected(editor, scene):
        node = editor.mrmlSegmentEditorNode()
        node.SetSourceVolumeIntensityMask(True)
        node.SetSourceVolumeIntensityMaskRange(290, 1000)  # about half of the sphere's voxels (300 +- 20)
        drag_around_centre(editor, "Green")
        wait_for_result(editor)
        shown = preview(editor, scene)
        click(effect(editor).applyButton)
        values = slicer.util.arrayFromVolume(scene["volume"])
        target = segments(scene)["target"]
        assert (target == (shown & (values >= 290))).all() and 0 < target.sum() < shown.sum()

    def test_apply_automatically(panel, editor, scene):
        effect(editor).applyAutomaticallyCheckBox.checked = True
        assert panel.self().logic.getParameterNode().GetParameter("ApplyAutomatically") == "true"
        drag_around_centre(editor, "Red")
        pythonqt.run_until(lambda: effect(editor).run is None, timeout=180)
        target = segments(scene)["target"]
        assert dice(target[CENTRE], sphere()[CENTRE]) > 0.9 and target.sum() == target[CENTRE].sum()
        assert effect(editor).previewNode is None
        effect(editor).applyAutomaticallyCheckBox.checked = False

    # -- Propagate and Esc ---------------------------------------------------------------------------------
    def test_propagate_segments_along_the_views_normal(panel, editor, scene):
        panel.self().logic.getParameterNode().SetParameter("EmptySliceLimit", "2")
        assert not effect(editor).propagateButton.enabled
        drag_around_centre(editor, "Green")
        wait_for_result(editor)
        click(effect(editor).propagateButton)
        wait_for_result(editor)
        shown = preview(editor, scene)
        assert dice(shown, sphere()) > 0.8  # the sphere's small caps are the hard slices
        slices = np.flatnonzero(shown.any(axis=(0, 2)))  # coronal: the j slices reached
        assert slices[0] <= CENTRE - RADIUS + 2 and slices[-1] >= CENTRE + RADIUS - 2
        assert "3D: " in effect(editor).statusLabel.text
        click(effect(editor).applyButton)
        assert (segments(scene)["target"] == shown).all()
        editor.undo()
        assert not segments(scene)["target"].any()

    def test_propagate_stops_near_the_structures_end_not_at_the_volumes(panel, editor, scene):
        """LiteMedSAM never returns an empty mask on the blank slices past the sphere's poles (k = 8 and 24): its
        mask fades there over a few slices. With Stop after 2 empty slices each sweep along Red ends once 2
        masks in a row have faded (docs/benchmarks.md): nothing is previewed 5 or more slices past a pole, and at
        most 4 slices past each pole are decoded, not the volume's 32; with 0 (never) both ends are reached."""
        parameters = panel.self().logic.getParameterNode()
        parameters.SetParameter("Mode", "3d")
        shown, visited = {}, {}
        for limit in (0, 2):
            parameters.SetParameter("EmptySliceLimit", str(limit))
            drag_around_centre(editor, "Red")
            wait_for_result(editor)
            shown[limit] = preview(editor, scene)
            visited[limit] = int(re.search(r"3D: (\d+) slices", effect(editor).statusLabel.text).group(1))
            assert dice(shown[limit], sphere()) > 0.8
            assert segment_editor.key(editor, "Red", "Escape")
        far = np.r_[: CENTRE - RADIUS - 4, CENTRE + RADIUS + 5 : SIZE]
        assert visited[0] == SIZE and shown[0][far].any(axis=(1, 2)).all()
        assert visited[2] <= 2 * RADIUS + 1 + 2 * 4 and not shown[2][far].any()

    def test_a_box_on_another_slice_is_a_key_slice_of_the_propagated_object(panel, editor, scene):
        """Box 1 in Red, Propagate, box 2 on another Red slice: a key slice of the same object (the module's
        Corrections core), not a new object: only the slices it governs change (between the key slices and
        beyond it, away from box 1), the others keep their masks exactly. A box on a key slice replaces it;
        Apply writes the whole corrected object as one undo step and ends the object."""
        panel.self().logic.getParameterNode().SetParameter("EmptySliceLimit", "2")
        drag_on_axial_slice(editor, CENTRE, (CENTRE - 10, CENTRE - 10), (CENTRE + 10, CENTRE + 10))
        wait_for_result(editor)
        click(effect(editor).propagateButton)
        wait_for_result(editor)
        first = preview(editor, scene)
        assert len(effect(editor).keySlices()) == 1 and not effect(editor).propagateButton.enabled
        key = CENTRE + 4
        half = (CENTRE - 9, CENTRE - 9), (CENTRE - 1, CENTRE + 9)  # i <= CENTRE - 1: a half of the sphere's section
        assert first[key, :, CENTRE + 1 :].sum() > 20  # the propagated mask covers the other half there

        drag_on_axial_slice(editor, key, *half)
        assert effect(editor).previewNode is not None, "the preview stays while the key slice is computed"
        wait_for_result(editor)
        second = preview(editor, scene)
        assert [z for z, _ in effect(editor).keySlices()] == [CENTRE, key], "box 2 is a key slice of the same object"
        assert "correction" in effect(editor).statusLabel.text and "2 key slices" in effect(editor).statusLabel.text
        assert all((second[k] == first[k]).all() for k in range(CENTRE + 1)), "slices that box 2 does not govern are unchanged"
        assert not second[key, :, CENTRE + 1 :].any() and second[key].sum() > 20  # box 2's half, on its slice
        assert any((second[k] != first[k]).any() for k in range(CENTRE + 1, key))  # the slices between: boxes in between
        # nothing bounds a box on a view: beyond box 2 the published rule and the stop rule end the object past
        # the sphere's pole (box 2 carried, as in an ROI's corrections, would run to the volume's end)
        assert not second[CENTRE + RADIUS + 5 :].any()

        drag_on_axial_slice(editor, key, (CENTRE - 10, CENTRE - 10), (CENTRE + 10, CENTRE + 10))  # replaces key slice 2
        wait_for_result(editor)
        third = preview(editor, scene)
        assert [z for z, _ in effect(editor).keySlices()] == [CENTRE, key]
        assert third[key, :, CENTRE + 1 :].sum() > 20 and all((third[k] == first[k]).all() for k in range(CENTRE + 1))

        click(effect(editor).applyButton)
        assert (segments(scene)["target"] == third).all() and effect(editor).keySlices() == ()
        editor.undo()
        assert not segments(scene)["target"].any(), "one Apply, one undo step"
        drag_on_axial_slice(editor, key, *half)  # after Apply: a new object (2D mode: that slice only)
        wait_for_result(editor)
        shown = preview(editor, scene)
        assert effect(editor).keySlices() == () and shown.sum() == shown[key].sum() > 0

    def test_escape_drops_the_preview_and_stops_a_run(editor, scene):
        before = segments(scene)
        drag_around_centre(editor, "Red")
        wait_for_result(editor)
        assert segment_editor.key(editor, "Red", "Escape")
        assert effect(editor).preview is None and effect(editor).previewNode is None
        assert not effect(editor).applyButton.enabled
        drag_around_centre(editor, "Yellow")
        task = effect(editor).run.task
        assert segment_editor.key(editor, "Yellow", "Escape")
        assert task.state == task.CANCELLED and effect(editor).run is None
        pythonqt.run_for(0.5)
        assert effect(editor).preview is None
        assert all((segments(scene)[s] == before[s]).all() for s in before)
        assert not segment_editor.key(editor, "Red", "Escape"), "with nothing to cancel, Esc is the editor's (deselects the effect)"
