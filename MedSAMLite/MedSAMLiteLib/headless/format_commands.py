"""`medsamlite convert | to-image | segment`: medical files in, challenge cases or masks out."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from .commands import backend_args

    c = sub.add_parser("convert", help="image (+ label map) -> challenge-format case .npz with its geometry")
    c.add_argument("image", help="NIfTI, NRRD, MHA/MHD, DICOM folder or file, PNG/JPEG/TIFF/BMP")
    c.add_argument("--labels", metavar="LABELMAP", help="label map on the image's grid: writes gts and one box per object")
    c.add_argument("--instances", action="store_true", help="one object per connected component of each label")
    c.add_argument("--min-size", type=int, default=1, help="drop objects smaller than this many voxels (default 1)")
    _input_args(c)
    c.add_argument("-o", "--output", required=True, help="case .npz (name it 2DBox_*/3DBox_* for `predict`)")
    c.set_defaults(func=_convert)

    t = sub.add_parser("to-image", help="write a predicted label map (.npz) back as NIfTI/NRRD/PNG on the source's voxels")
    t.add_argument("segs", help=".npz with the label map (from `medsamlite predict`)")
    t.add_argument("--like", help="the original image, or the case .npz from `convert` (default: geometry stored in SEGS)")
    t.add_argument("--key", default="segs", help="array to write (default segs; e.g. gts)")
    t.add_argument("--volume", type=int, help="with a 4D --like image: the volume the case came from")
    t.add_argument("--series", metavar="UID", help="with a DICOM folder as --like: the series the case came from")
    t.add_argument("-o", "--output", required=True, help="mask file: .nii.gz, .nii, .nrrd, .mha, .mhd, .png, .tif, .bmp")
    t.set_defaults(func=_to_image)

    s = sub.add_parser("segment", help="segment an image file from boxes; the mask is written with the image's geometry")
    s.add_argument("image", help="NIfTI, NRRD, MHA/MHD, DICOM folder or file, PNG/JPEG/TIFF/BMP")
    s.add_argument("--box", action="append", default=[], metavar="X0,Y0[,Z0],X1,Y1[,Z1]",
                   help="a box in array voxels (x column, y row, z slice; z inclusive), or RAS mm with --world; repeatable")
    s.add_argument("--boxes", metavar="CSV", help="file of boxes, one per row (header x_min,y_min,[z_min,]x_max,y_max[,z_max] optional)")
    s.add_argument("--world", action="store_true", help="boxes are two opposite corners in world RAS millimetres")
    _input_args(s)
    backend_args(s)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.add_argument("-o", "--output", required=True, help="mask file: .nii.gz, .nrrd, .mha, .png, .tif, ... (same geometry as IMAGE)")
    s.set_defaults(func=_segment)


def preset_args(p: argparse.ArgumentParser) -> None:
    """--modality, --preset | --window (also `batch`'s)."""
    from ..core.presets import PRESETS

    p.add_argument("--modality", help="CT, MR, PET, US, XRay, ... (default: from DICOM; CT gets the abdomen window)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", type=str.lower, choices=PRESETS, help="CT windows abdomen, lung, brain, mediastinum, bone; or mr (percentile clipping), none")
    group.add_argument("--window", metavar="W,L", help="custom CT window, e.g. 400,40")


def _input_args(p: argparse.ArgumentParser) -> None:
    preset_args(p)
    p.add_argument("--volume", type=int, help="which volume of a 4D image (0-based)")
    p.add_argument("--series", metavar="UID", help="which series of a DICOM folder (default: the largest)")


def _fail(message: str) -> int:
    print(f"medsamlite: {message}", file=sys.stderr)
    return 1


def _read(args: argparse.Namespace):
    """-> (Image, modality, (width, level) or None), after printing what the reader and presets decided."""
    from ..core.presets import describe, parse_window
    from .image_io import read_image

    window_wl = parse_window(args.window) if args.window else None
    image = read_image(args.image, args.volume, args.series)
    for note in image.notes:
        print(f"medsamlite: {args.image}: {note}", file=sys.stderr)
    modality = args.modality or image.modality
    how = describe(modality, args.preset, window_wl, image.kind == "2D" and image.array.dtype.name == "uint8")
    if modality is None and how.startswith("clipped"):
        print(f"medsamlite: {args.image}: modality unknown, intensities {how} (for CT give --modality CT or a --preset)", file=sys.stderr)
    return image, modality, window_wl


def _convert(args: argparse.Namespace) -> int:
    from .cases import atomic_savez
    from .case import make_case
    from .image_io import FormatError, read_labels
    from .labels import LabelError

    out = Path(args.output)
    if not out.name.endswith(".npz"):
        return _fail(f"{out}: the case file must end in .npz")
    try:
        image, modality, window_wl = _read(args)
        labels = read_labels(args.labels, image) if args.labels else None
        case = make_case(image, labels, modality, args.preset, window_wl, args.instances, args.min_size)
    except FormatError as e:
        return _fail(str(e))
    except LabelError as e:
        return _fail(f"{args.labels}: {e}")
    except ValueError as e:
        return _fail(f"{args.image}: {e}")
    atomic_savez(out, **case)
    objects = f", {len(case['boxes'])} object(s)" if "boxes" in case else ""
    print(f"{out}: {image.kind} {case['imgs'].shape}, {case['intensity']}{objects}")
    if not out.name.startswith(("2D", "3D")):
        print("medsamlite: note: `predict` tells 2D from 3D by the name prefix (2DBox_*/3DBox_*), else by the box width", file=sys.stderr)
    return 0


def _to_image(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.geometry import Geometry
    from .image_io import FormatError, read_image, write_mask

    try:
        with np.load(args.segs, allow_pickle=False) as data:
            if args.key not in data.files:
                return _fail(f"{args.segs}: no array {args.key!r} (found: {', '.join(data.files) or 'none'})")
            mask = data[args.key]
            stored = Geometry.from_arrays(data) if "geom_shape" in data.files else None
    except (OSError, ValueError, KeyError) as e:
        return _fail(f"{args.segs}: unreadable .npz ({e})")
    try:
        if args.like:
            like = args.like if args.like.endswith(".npz") else read_image(args.like, args.volume, args.series).geometry
        elif stored is not None:
            like = stored
        else:
            return _fail(f"{args.segs}: no geometry stored; give --like ORIGINAL (the image it came from) or the case .npz from `convert`")
        out = write_mask(mask, like, args.output)
    except FormatError as e:
        return _fail(str(e))
    print(f"{out}: {int(mask.max()) if mask.size else 0} label(s)")
    return 0


def _segment(args: argparse.Namespace) -> int:
    from .cases import Case, CaseError, validate
    from .commands import load_segmenter
    from .runner import segment_case
    from .boxes import parse_box, prompt_boxes, read_boxes_csv
    from .image_io import FormatError, mask_format, write_mask

    try:
        image, modality, window_wl = _read(args)
        typed = [parse_box(b) for b in args.box] + (read_boxes_csv(args.boxes) if args.boxes else [])
        boxes = prompt_boxes(typed, image.kind, image.geometry, args.world)
        imgs = image.to_uint8(args.preset, window_wl, modality)
        case = Case(Path(args.image).name, image.kind, imgs, boxes, image.spacing if image.kind == "3D" else None)
        validate(case)
        mask_format(args.output, image.geometry)  # refuse an unusable output before spending time on the model
    except FormatError as e:
        return _fail(str(e))
    except (ValueError, CaseError) as e:
        return _fail(f"{args.image}: {e}")
    segs = segment_case(load_segmenter(args), case, show_slices=not args.quiet)
    try:
        out = write_mask(segs, image, args.output)
    except FormatError as e:
        return _fail(str(e))
    counts = ", ".join(f"{label}: {int((segs == label).sum())}" for label in range(1, len(boxes) + 1))
    print(f"{out}: {len(boxes)} object(s), voxels per label {counts}")
    return 0
