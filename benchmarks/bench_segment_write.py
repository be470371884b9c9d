"""Main-thread time of writing a result into a segment on a real-size CT (400 x 512 x 512 int16), on
slicer-core (real MRML): SegmentWriter (MedSAMLiteLib/mrml/segments.py, extent-limited) against the
whole-volume read + write the Logic used before (slicer.util's array round trip through a temporary
labelmap node).

The segmentation is a worst case for Slicer's labelmap layers: all segments share one layer that spans
most of the volume (a 360 x 460 x 460 "body" as TotalSegmentator-like outputs have, two organs, and the
target with earlier content). Each timed call is one main-thread call of the Logic's `poll`:
  2D        the write of one 2D result (its slice, a 120 x 120 object), no editor / with the Segment
            Editor's masking (inside the body segment, intensity range) and overwrite mode; into a new
            segment (first its slice, then 40 slices)
  3D        the middle-slice partial write, then the final write of 40 slices (a 120 x 120 x 40 object)
  restore   Cancel after the 3D run (every touched segment back)
  finish    the undo record taken when a run ends; undo   taking the run back
  separate  once, on a fresh segmentation: the first result that covers another segment of the target's
            shared layer (Slicer moves the target into a layer of its own, a copy sized by that layer)
Median of --repeat rounds after one warm-up round.

Usage: .venv/bin/python benchmarks/bench_segment_write.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "MedSAMLite" / "Testing"))
sys.path.insert(0, str(HERE.parent / "MedSAMLite"))

import harness  # noqa: E402
from bench_common import machine_line  # noqa: E402

SHAPE = (400, 512, 512)  # k, j, i
MIDDLE = 200


def build():
    """Volume, segmentation (one shared layer: body, liver, kidney, target) and the target's ID."""
    import slicer

    harness.install()
    harness.new_scene()
    values = np.full(SHAPE, -1000, np.int16)
    values[20:380, 26:486, 26:486] = 40
    volume = slicer.util.addVolumeFromArray(values, name="CT 400x512x512")
    labels = np.zeros(SHAPE, np.uint8)
    labels[20:380, 26:486, 26:486] = 1  # body
    labels[150:260, 100:260, 80:240] = 2  # liver
    labels[170:230, 300:360, 300:360] = 3  # kidney
    labels[MIDDLE - 30:MIDDLE + 30, 190:250, 330:390] = 4  # target: earlier content next to the new object
    labelmap = slicer.modules.volumes.logic().CreateAndAddLabelVolume(slicer.mrmlScene, volume, "labels")
    slicer.util.updateVolumeFromArray(labelmap, labels)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    assert slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
    slicer.mrmlScene.RemoveNode(labelmap)
    ids = list(segmentation.GetSegmentation().GetSegmentIDs())
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1 and len(ids) == 4
    return volume, segmentation, ids[3]


def object_slices(k0: int, k1: int) -> np.ndarray:
    """A result on slices k0..k1 (whole slices, as the Logic hands them): a 120 x 120 disc per slice."""
    jj, ii = np.mgrid[:SHAPE[1], :SHAPE[2]]
    disc = ((jj - 220) ** 2 + (ii - 300) ** 2) <= 60 ** 2
    return np.repeat(disc[None], k1 - k0 + 1, axis=0).astype(np.uint8)


def slab_extent(k0: int, k1: int):
    return (0, SHAPE[2] - 1, 0, SHAPE[1] - 1, k0, k1)


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import slicer
    from MedSAMLiteLib.mrml.segments import SegmentWriter

    volume, segmentation, target = build()
    editor = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(-100, 300)
    editor.SetOverwriteMode(editor.OverwriteAllSegments)
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
    masked = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    masked.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    masked.SetMaskSegmentID(segmentation.GetSegmentation().GetSegmentIDs()[0])  # inside the body
    masked.SetSourceVolumeIntensityMask(True)
    masked.SetSourceVolumeIntensityMaskRange(-100, 300)
    one, slab = object_slices(MIDDLE, MIDDLE), object_slices(MIDDLE - 20, MIDDLE + 19)
    before = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, target, volume).copy()
    rows = {k: [] for k in ("whole", "2d", "2d_masked", "2d_overwrite", "new_2d", "new_3d", "3d_partial", "3d_final", "restore", "finish", "undo")}
    for round_ in range(args.repeat + 1):
        times = {}
        t0 = time.perf_counter()  # the previous Logic: the whole segment read, one slice replaced, written back
        current = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, target, volume)
        current[MIDDLE] = one[0]
        slicer.util.updateSegmentBinaryLabelmapFromArray(current, segmentation, target, volume)
        times["whole"] = time.perf_counter() - t0
        slicer.util.updateSegmentBinaryLabelmapFromArray(before, segmentation, target, volume)
        for key, editorNode in (("2d", None), ("2d_masked", masked), ("2d_overwrite", editor)):
            writer = SegmentWriter(segmentation, target, volume, editorNode=editorNode)
            times[key] = timed(writer.write, slab_extent(MIDDLE, MIDDLE), one)
            if editorNode is not masked:  # (masked: the target's old voxels lie outside the body segment: kept)
                assert np.array_equal(writer.read(target, slab_extent(MIDDLE, MIDDLE)), one > 0), "not written"
            writer.restore()
        writer = SegmentWriter(segmentation, None, volume)  # a new segment over the body: its own layer
        times["new_2d"] = timed(writer.write, slab_extent(MIDDLE, MIDDLE), one)
        times["new_3d"] = timed(writer.write, slab_extent(MIDDLE - 20, MIDDLE + 19), slab)
        writer.restore()
        writer = SegmentWriter(segmentation, target, volume, editorNode=editor)
        times["3d_partial"] = timed(writer.write, slab_extent(MIDDLE, MIDDLE), one)
        times["3d_final"] = timed(writer.write, slab_extent(MIDDLE - 20, MIDDLE + 19), slab)
        assert np.array_equal(writer.read(target, slab_extent(MIDDLE - 20, MIDDLE + 19)), slab > 0), "not written"
        times["restore"] = timed(writer.restore)
        writer = SegmentWriter(segmentation, target, volume)
        writer.write(slab_extent(MIDDLE - 20, MIDDLE + 19), slab)
        times["finish"] = timed(writer.finish)
        times["undo"] = timed(writer.undo)
        assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, target, volume), before), "not restored"
        if round_:
            for key, seconds in times.items():
                rows[key].append(seconds)
    ms = {k: 1000 * statistics.median(v) for k, v in rows.items()}
    # once per segment: the first result over another segment of the target's shared layer makes Slicer
    # move the target into a layer of its own (a copy sized by the shared layer), on a fresh segmentation
    volume, segmentation, target = build()
    writer = SegmentWriter(segmentation, target, volume)
    ms["separate"] = 1000 * timed(writer.write, slab_extent(MIDDLE, MIDDLE), one)
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 2
    print(machine_line(sys.argv))
    print(f"\n400 x 512 x 512 int16 CT, 4 segments in one shared layer spanning 360 x 460 x 460, median of {args.repeat} rounds:\n")
    print("| main-thread call | ms |\n|---|---|")
    labels = {
        "whole": "previous Logic: whole segment read, one slice replaced, written back (2D click)",
        "2d": "2D result written (its slice), no editor", "2d_masked": "2D, editor masking (inside a segment, intensity range)",
        "2d_overwrite": "2D, editor overwrite all segments",
        "new_2d": "2D into a new segment (no editor: it overlaps the body, so Slicer gives it a layer)",
        "new_3d": "then 40 slices into that segment", "3d_partial": "3D middle slice (partial result), overwrite all",
        "3d_final": "3D final write, 40 slices, overwrite all", "restore": "Cancel: every touched segment restored",
        "finish": "undo record at the end of a run (40 slices)", "undo": "undo of that run",
        "separate": "once per segment, not a median: 2D result over another segment of its shared layer (Slicer separates it)",
    }
    for key, label in labels.items():
        print(f"| {label} | {ms[key]:.1f} |")


if __name__ == "__main__":
    main()
