"""Overlay pictures: the image with box prompts and mask contours, for a person to check."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .cases import Case


def label_colour(label: int) -> tuple[int, int, int]:
    """A distinct, bright BGR colour per label (golden-angle hue steps)."""
    hue = int((label * 137.508) % 180)
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw(image: np.ndarray, segs: np.ndarray, boxes: dict[int, np.ndarray]) -> np.ndarray:
    """BGR picture of `image` with each label's contour and its box (xyxy)."""
    canvas = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=-1)
    canvas = np.ascontiguousarray(canvas[:, :, ::-1])  # RGB -> BGR for cv2
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for label, box in boxes.items():
        colour = label_colour(label)
        mask = (segs == label).astype(np.uint8)
        if mask.any():
            tint = canvas.copy()
            tint[mask > 0] = colour
            canvas = cv2.addWeighted(canvas, 0.7, tint, 0.3, 0)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(canvas, contours, -1, colour, thickness)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness, lineType=cv2.LINE_AA)
    return canvas


def case_overlay(case: Case, segs: np.ndarray) -> np.ndarray:
    """2D: the image. 3D: the middle slice of each object, side by side."""
    if case.kind == "2D":
        return draw(case.imgs, segs, {i: b for i, b in enumerate(case.boxes, start=1)})
    panels = []
    for i, b in enumerate(case.boxes, start=1):
        z = int(np.clip(int((b[5] - b[2]) / 2 + b[2]), 0, case.imgs.shape[0] - 1))
        panel = draw(case.imgs[z], segs[z], {i: b[[0, 1, 3, 4]]})
        cv2.putText(panel, f"object {i}, z={z}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(panel)
    return np.concatenate(panels, axis=1)


def save_overlay(path: str | Path, picture: np.ndarray) -> None:
    """Write a PNG atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", picture)
    if not ok:
        raise OSError(f"could not encode {path}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
