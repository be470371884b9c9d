"""Medical image formats in and out with correct geometry (NIfTI, NRRD, MHA/MHD, DICOM, PNG/JPEG/TIFF/BMP).

Needs the `formats` extra (SimpleITK, scipy): `pip install 'medficient[formats]'`. See docs/formats.md.

Array layout (the one documented orientation)
    Volumes: `(D, H, W)` = axial slices from inferior to superior, rows anterior -> posterior,
    columns patient right -> left (radiological view; a permutation/flip of the stored axes,
    never a resampling). 2D images and single-slice scans keep their stored layout: `(H, W)` or
    `(H, W, 3)`. `spacing` is in array-axis order. Boxes use the challenge convention (x = column,
    y = row, z = slice; 3D z range inclusive). World coordinates are RAS millimetres.

Python API::

    from medficient.formats import read_image, read_labels, apply_preset, write_mask

    img = read_image("ct.nii.gz")            # Image; also a DICOM folder, .nrrd, .mha, .png ...
    img.array, img.kind, img.spacing         # (D,H,W) raw values (HU for CT), "3D", (dz, dy, dx) mm
    img.geometry.affine                      # 4x4: array index (d,h,w,1) -> RAS mm
    img.modality, img.notes                  # "CT"/"MR"/... from DICOM (else None); reader's choices
    u8 = img.to_uint8(preset="lung")         # = apply_preset(img.array, img.modality, "lung", is_2d=...)
    u8 = apply_preset(img.array, modality="CT", window_wl=(400, 40))
    labels = read_labels("seg.nii.gz", like=img)       # same grid required, same layout
    gts, boxes, values = boxes_from_labels(labels, instances=True, min_size=10)
    write_mask(segs, like=img, path="mask.nii.gz")      # or like="ct.nii.gz" / a case .npz / a Geometry
    xyz = img.geometry.index_to_world([[d, h, w]]); dhw = img.geometry.world_to_index(xyz)
    box = world_box_to_voxels([x0, y0, z0, x1, y1, z1], img.geometry)   # RAS mm -> voxel box

Errors are `FormatError` (a ValueError) with a one-line message naming the file.
"""
from __future__ import annotations

from .boxes import parse_box, prompt_boxes, read_boxes_csv, world_box_to_voxels
from .case import make_case
from .geometry import Geometry
from .intensity import CT_WINDOWS, PRESETS, apply_preset, percentile_clip, window
from .io import FormatError, Image, geometry_of, read_image, read_labels, write_mask
from .labels import boxes_from_labels

__all__ = [
    "CT_WINDOWS", "PRESETS", "FormatError", "Geometry", "Image",
    "apply_preset", "boxes_from_labels", "geometry_of", "make_case", "parse_box", "percentile_clip",
    "prompt_boxes", "read_boxes_csv", "read_image", "read_labels", "window", "world_box_to_voxels", "write_mask",
]
