"""Draw the module icon Resources/Icons/MedSAMLite.png (128x128, a few KB): a dark slice with a
bright organ-like blob, the dashed prompt box around it and the mask contour the model returns.

Generated rather than drawn by hand so it can be rebuilt and stays small. Run: python make_icon.py
"""
from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "Resources" / "Icons" / "MedSAMLite.png"
SIZE = 128
BOX = (22, 26, 106, 102)  # x0, y0, x1, y1 of the prompt box
BOX_COLOUR = (60, 200, 255)  # BGR: amber
CONTOUR_COLOUR = (90, 220, 90)  # BGR: green


def draw_icon() -> np.ndarray:
    """The icon as BGRA uint8 (transparent corners, rounded square background)."""
    bgr = np.zeros((SIZE, SIZE, 3), np.uint8)
    alpha = np.zeros((SIZE, SIZE), np.uint8)
    cv2.rectangle(alpha, (8, 0), (SIZE - 9, SIZE - 1), 255, -1)
    cv2.rectangle(alpha, (0, 8), (SIZE - 1, SIZE - 9), 255, -1)
    for cx, cy in ((8, 8), (SIZE - 9, 8), (8, SIZE - 9), (SIZE - 9, SIZE - 9)):
        cv2.circle(alpha, (cx, cy), 8, 255, -1)
    bgr[:] = (48, 36, 30)

    # the structure: two overlapping ellipses, filled grey as on a CT/MR slice
    organ = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(organ, (60, 66), (30, 24), -25, 0, 360, 255, -1)
    cv2.ellipse(organ, (80, 72), (18, 22), 10, 0, 360, 255, -1)
    bgr[organ > 0] = (150, 150, 150)

    # dashed prompt box
    x0, y0, x1, y1 = BOX
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        for t in np.arange(0.0, 1.0, 0.125):
            p = np.add(a, np.subtract(b, a) * t).astype(int)
            q = np.add(a, np.subtract(b, a) * min(t + 0.08, 1.0)).astype(int)
            cv2.line(bgr, tuple(int(v) for v in p), tuple(int(v) for v in q), BOX_COLOUR, 3)

    # the returned mask's contour
    contours, _ = cv2.findContours(organ, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(bgr, contours, -1, CONTOUR_COLOUR, 4, cv2.LINE_AA)
    return np.dstack([bgr, alpha])


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", draw_icon(), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise SystemExit("PNG encoding failed")
    OUT.write_bytes(data.tobytes())
    print(f"{OUT}: {len(data)} bytes")


if __name__ == "__main__":
    main()
