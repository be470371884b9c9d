"""`make demo`: the module's main job, headless: a real CT in a real MRML scene, an ROI around the
brain, MedSAMLiteLogic.segment with the genuine LiteMedSAM weights, the result saved as .seg.nrrd
and an overlay PNG; prints the DSC against the reference mask and the seconds.

The CT is TotalSegmentator's 1 mm brain atlas (from its PyPI wheel, that file only); the reference is
the brain (tissue > 10 HU, holes filled). Runs on PyPI slicer-core through the test harness.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def save_segmentation(node, path: Path) -> None:
    """Write the segmentation as .seg.nrrd through a temp file in the same folder, then rename."""
    import slicer

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".demo-", suffix=".seg.nrrd")
    os.close(fd)
    try:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(tmp)
        if not storage.WriteData(node):
            raise RuntimeError(f"could not write {path}")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="folder for the .seg.nrrd and the overlay PNG")
    parser.add_argument("--slices", type=int, default=40, help="axial slices of the ROI (through the brain's middle)")
    args = parser.parse_args(argv)

    module = harness.load_module()
    harness.new_scene()
    import cv2
    import slicer
    import vtk

    from MedSAMLiteLib.core.geometry import Geometry
    from MedSAMLiteLib.headless.overlay import draw
    from MedSAMLiteLib.headless.samples import brain_mask, ct_brain_atlas_path
    from MedSAMLiteLib.core.presets import apply_preset

    path = ct_brain_atlas_path()
    volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(path), "CT brain atlas", 0, None)
    hu = slicer.util.arrayFromVolume(volume)  # (k, j, i); k runs inferior -> superior here
    reference = brain_mask(hu)
    zs = np.flatnonzero(reference.any(axis=(1, 2)))
    middle = (zs[0] + zs[-1]) // 2
    lo, hi = middle - args.slices // 2, middle - args.slices // 2 + args.slices - 1
    reference[:lo] = reference[hi + 1:] = False
    roi = module.MedSAMLiteTest.roiAroundMask(reference, volume, "brain ROI")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "MedSAMLite demo")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)

    logic = module.MedSAMLiteLogic()
    t0 = time.perf_counter()
    segment_id = logic.segment(volume, roi, segmentation, preset="brain")
    seconds = time.perf_counter() - t0
    result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume) > 0
    dice = 2 * np.logical_and(result, reference).sum() / (result.sum() + reference.sum())

    out = Path(args.out)
    seg_path = out / "ct_brain.seg.nrrd"
    save_segmentation(segmentation, seg_path)
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    axial = Geometry.from_ijk_to_ras(hu.shape[::-1], slicer.util.arrayFromVTKMatrix(ijk_to_ras)).from_source_array
    z = (lo + hi) // 2  # the same index in the axial layout: this volume's k axis is already inferior -> superior
    ys, xs = np.nonzero(axial(reference)[z])
    picture = draw(apply_preset(axial(hu)[z], preset="brain"), axial(result)[z].astype(np.uint8),
                   {1: np.array([xs.min(), ys.min(), xs.max(), ys.max()])})
    png = out / "ct_brain_overlay.png"
    cv2.imwrite(str(png), cv2.resize(picture, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST))
    print(f"CT brain atlas {hu.shape[::-1]} voxels, ROI over {args.slices} slices, backend litemedsam, preset brain")
    print(f"  DSC against the reference brain mask: {dice:.3f}   (Segment: {seconds:.1f} s; {logic.lastStatus})")
    print(f"  segmentation: {seg_path}\n  overlay:      {png} (slice {z}; box in colour, mask tinted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
