"""Key-slice corrections at real size: the CT brain atlas resampled to 400 x 512 x 512 in a real MRML scene
(slicer-core), a 40-slice ROI around the brain, one 3D Segment (LiteMedSAM, preset brain), then a user
who corrects the worst slice (by wrong voxels against the atlas's brain mask) `--corrections` times with
the true box there (an ROI drawn around the brain on that slice), then Undo of every correction.

Reported per correction: seconds from the click to the segment written (embeddings cached by the Segment),
slices decoded again, the engine's seconds and its decoder's share, slices encoded (0: every embedding came
from the cache), the longest single main-thread call (the Logic's startCorrection and poll), and
whether Undo gave back the first result voxel for voxel.

Usage: PYTHONPATH=MedSAMLite .venv/bin/python benchmarks/bench_corrections.py [--corrections 3]
"""
from __future__ import annotations

import argparse
import os
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

SHAPE = (400, 512, 512)


def build(module):
    import slicer
    from scipy import ndimage

    from MedSAMLiteLib.headless.samples import brain_mask, ct_brain_atlas_path

    harness.new_scene()
    atlas = slicer.modules.volumes.logic().AddArchetypeVolume(str(ct_brain_atlas_path()), "atlas", 0, None)
    hu = slicer.util.arrayFromVolume(atlas).astype(np.int16)
    factors = [n / o for n, o in zip(SHAPE, hu.shape)]
    values = ndimage.zoom(hu, factors, order=1)
    truth = ndimage.zoom(brain_mask(hu).astype(np.uint8), factors, order=0) > 0
    slicer.mrmlScene.RemoveNode(atlas)
    volume = slicer.util.addVolumeFromArray(values, name="CT 400x512x512")
    volume.SetSpacing(*(1.0 / f for f in factors[::-1]))
    zs = np.flatnonzero(truth.any(axis=(1, 2)))
    lo = (zs[0] + zs[-1]) // 2 - 20
    roi_mask = truth.copy()
    roi_mask[:lo] = roi_mask[lo + 40:] = False
    roi = module.MedSAMLiteTest.roiAroundMask(roi_mask, volume, "brain ROI")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "bench")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    truth[:lo] = truth[lo + 40:] = False
    return volume, roi, segmentation, truth, (lo, lo + 39)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corrections", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at the start {os.getloadavg()[0]:.1f}")
    module = harness.load_module()
    import slicer

    volume, roi, segmentation, truth, (lo, hi) = build(module)
    logic = module.MedSAMLiteLogic()
    calls = []
    for name in ("startSegment", "startCorrection", "poll"):
        inner = getattr(logic, name)

        def timed(*a, _inner=inner, **k):
            t0 = time.perf_counter()
            try:
                return _inner(*a, **k)
            finally:
                calls.append(time.perf_counter() - t0)

        setattr(logic, name, timed)
    t0 = time.perf_counter()
    segment = logic.segment(volume, roi, segmentation, preset="brain", emptySliceLimit=0, mode="3d")
    print(f"Segment (40 slices, encoding included): {time.perf_counter() - t0:.1f} s; {logic.lastStatus}; "
          f"longest main-thread call {max(calls) * 1000:.0f} ms")

    def array():
        return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment, volume) > 0

    first = array()
    dsc = lambda a: 2 * (a & truth).sum() / (a.sum() + truth.sum())  # noqa: E731
    print(f"DSC against the brain mask in the ROI's slices: {dsc(first):.3f}")
    ijk_to_ras = vtk_to_numpy_matrix(volume)
    rows, told = [], set()
    for n in range(args.corrections):
        wrong = (array() ^ truth)[lo : hi + 1].sum(axis=(1, 2))
        wrong[[t - lo for t in told]] = -1  # a slice already corrected is not drawn again
        k = lo + int(np.argmax(wrong))
        told.add(k)
        one = np.zeros_like(truth)
        one[k] = truth[k]
        box = module.MedSAMLiteTest.roiAroundMask(one, volume, f"key {k}")
        point = (ijk_to_ras @ [SHAPE[2] / 2, SHAPE[1] / 2, k, 1.0])[:3]
        calls.clear()
        t0 = time.perf_counter()
        logic.correctSlice(segmentation, segment, point, box)
        seconds = time.perf_counter() - t0
        rows.append((n + 1, k, seconds, logic.lastStatus, max(calls), dsc(array())))
        print(f"correction {n + 1} at IJK slice {k}: {seconds:.2f} s, {logic.lastStatus}, longest main-thread call "
              f"{max(calls) * 1000:.0f} ms, DSC {rows[-1][-1]:.3f}")
    for _ in rows:
        assert logic.undo()
    print(f"Undo of {len(rows)} corrections gives back the first result voxel for voxel: {np.array_equal(array(), first)}")
    print(machine_line(sys.argv) + f"; load average {os.getloadavg()[0]:.1f}")
    return 0


def vtk_to_numpy_matrix(volume) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


if __name__ == "__main__":
    sys.exit(main())
