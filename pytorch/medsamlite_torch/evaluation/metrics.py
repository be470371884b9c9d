"""DSC and NSD of one case, as the challenge computed them, with explicit edge cases.

Challenge rules (evaluation/compute_metrics.py of the challenge):
* labels 1..max(gts); DSC per label 2|A∩B| / (|A| + |B|); case DSC = mean over labels;
* NSD per label at tolerance 2.0 (surfel areas): 3D with the stored `spacing` applied to the array
  axes in stored order; 2D with a third axis of length 1 and spacing (1, 1, 1);
* NSD only when the case DSC > 0.2, else 0; case NSD = mean over labels.

Edge cases (the challenge code crashes on NumPy 2 or returns NaN; see docs/evaluation.md):
* label empty in both ground truth and prediction: not an object of this case; DSC and NSD NaN,
  left out of the case means;
* label in the ground truth, absent from the prediction (or the other way round): DSC 0, NSD 0;
* prediction labels above max(gts): ignored, as in the challenge;
* ground truth without any label: `MetricError` (nothing to score).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from MedSAMLiteLib.headless.surface import surface_dice_cropped

TOLERANCE = 2.0
DSC_GATE = 0.2  # NSD is computed only when the case DSC exceeds this
NSD_MODES = {
    "challenge": "2D masks as a one-voxel-thick slab with spacing (1,1,1), as the challenge did",
    "contour": "2D masks by their contour (marching squares) with spacing (1,1); 3D unchanged",
}

EMPTY_BOTH = "empty_both"  # label in neither mask: excluded from the means
MISSED = "missed"  # label in the ground truth only
FALSE_POSITIVE = "false_positive"  # label in the prediction only
GATED = "nsd_gated"  # NSD set to 0 because the case DSC <= 0.2
_KEEP_CROPS_BYTES = 256 * 2**20  # label crops kept between the DSC and NSD passes up to this size


class MetricError(ValueError):
    """The case cannot be scored; the message says why."""


@dataclass
class LabelScore:
    label: int
    dsc: float
    nsd: float
    gt_voxels: int
    pred_voxels: int
    note: str = ""


@dataclass
class CaseScore:
    dsc: float
    nsd: float
    labels: list[LabelScore] = field(default_factory=list)

    @property
    def empty_prediction(self) -> bool:
        return all(s.pred_voxels == 0 for s in self.labels)


def as_label_map(array: np.ndarray, what: str) -> np.ndarray:
    """Integer label map (bool becomes 0/1; floats only if they hold whole numbers)."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.view(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise MetricError(f"{what} must hold integer labels, not {array.dtype}")


def check_spacing(spacing, ndim: int = 3) -> tuple[float, ...]:
    if spacing is None:
        raise MetricError("3D ground truth has no 'spacing'")
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise MetricError(f"spacing must be {ndim} positive numbers, got {np.asarray(spacing).tolist()}")
    return tuple(float(s) for s in sp)


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def score_case(
    gts: np.ndarray,
    segs: np.ndarray,
    kind: str,
    spacing=None,
    nsd_mode: str = "challenge",
    tolerance: float = TOLERANCE,
) -> CaseScore:
    """DSC and NSD of one case (`kind` "2D" or "3D"); raises MetricError for unusable input."""
    from scipy import ndimage

    if nsd_mode not in NSD_MODES:
        raise ValueError(f"nsd_mode must be one of {', '.join(NSD_MODES)}")
    gts, segs = as_label_map(gts, "ground truth"), as_label_map(segs, "prediction")
    if gts.shape != segs.shape:
        raise MetricError(f"shape mismatch: prediction {segs.shape}, ground truth {gts.shape}")
    ndim = 3 if kind == "3D" else 2
    if gts.ndim != ndim:
        raise MetricError(f"{kind} case needs {ndim}D masks, got shape {gts.shape}")
    if kind == "3D":
        sp = check_spacing(spacing)
    elif nsd_mode == "challenge":
        sp = (1.0, 1.0, 1.0)
    else:
        sp = (1.0, 1.0)
    n_labels = int(gts.max()) if gts.size else 0
    if n_labels <= 0:
        raise MetricError("ground truth has no foreground label")

    boxes_gt = ndimage.find_objects(gts, max_label=n_labels)
    boxes_pred = ndimage.find_objects(segs, max_label=n_labels)
    crops, labels, kept = [], [], 0
    for label in range(1, n_labels + 1):
        box = _union(boxes_gt[label - 1], boxes_pred[label - 1])
        if box is None:
            labels.append(LabelScore(label, np.nan, np.nan, 0, 0, EMPTY_BOTH))
            crops.append(None)
            continue
        a, b = gts[box] == label, segs[box] == label
        na, nb, both = int(np.count_nonzero(a)), int(np.count_nonzero(b)), int(np.count_nonzero(a & b))
        note = MISSED if nb == 0 else FALSE_POSITIVE if na == 0 else ""
        labels.append(LabelScore(label, 2.0 * both / (na + nb), np.nan, na, nb, note))
        kept += 2 * a.size
        crops.append((box, (a, b) if kept <= _KEEP_CROPS_BYTES else None))  # reused for NSD

    dsc = float(np.nanmean([s.dsc for s in labels]))
    if not dsc > DSC_GATE:
        for s in labels:
            if s.note != EMPTY_BOTH:
                s.nsd = 0.0
                s.note = f"{s.note},{GATED}" if s.note else GATED
        return CaseScore(dsc, 0.0, labels)

    for s, crop in zip(labels, crops):
        if crop is None:
            continue
        if s.gt_voxels == 0 or s.pred_voxels == 0:
            s.nsd = 0.0  # one surface is empty: nothing of the other is within tolerance
            continue
        box, masks = crop
        a, b = masks if masks is not None else (gts[box] == s.label, segs[box] == s.label)
        if kind == "2D" and nsd_mode == "challenge":
            a, b = a[..., None], b[..., None]
        s.nsd = surface_dice_cropped(a, b, sp, tolerance)
    nsd = float(np.nanmean([s.nsd for s in labels]))
    return CaseScore(dsc, nsd, labels)
