"""Surfel area and contour length tables for 2x2(x2) neighbourhood codes.

The 3D table reproduces the per-code surface elements of DeepMind's `surface-distance`
(https://github.com/google-deepmind/surface-distance, `lookup_tables.py`, Copyright 2018 Google
Inc., Apache License 2.0), which the challenge's evaluation used: each code lists the area
vectors of its marching-cubes triangles in a unit cube. Only the absolute components matter for
the area, so they are stored here in eighths: '400 222 111' is three triangles with area vectors
(4, 0, 0)/8, (2, 2, 2)/8 and (1, 1, 1)/8. The test suite checks the tables against the package.

A code is the sum of the weights of the foreground voxels of a 2x2x2 neighbourhood, weight
2**(4*(1-a) + 2*(1-b) + (1-c)) for the voxel at offset (a, b, c) in {0, 1}**3 (so 128 for the
first corner, 1 for the last); in 2D 2**(2*(1-a) + (1-b)).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

# fmt: off
_AREA_VECTORS_IN_EIGHTHS = (
    '000', '111', '111', '220 220', '111', '202 202', '111 111', '400 222 111',  # 0-7
    '111', '111 111', '202 202', '400 222 111', '220 220', '400 222 111', '400 222 111', '400 400',  # 8-15
    '111', '022 022', '111 111', '040 222 111', '111 111', '004 222 111', '111 111 111', '111 222 222 111',  # 16-23
    '111 111', '022 022 111', '202 202 111', '111 333 022 202', '111 220 220', '333 022 111 220', '400 111 222 111', '400 111 222',  # 24-31
    '111', '111 111', '022 022', '040 111 222', '111 111', '111 202 202', '022 022 111', '333 022 111 202',  # 32-39
    '111 111', '111 111 111', '004 222 111', '222 222 111 111', '111 220 220', '400 222 111 111', '022 333 111 220', '400 222 111',  # 40-47
    '220 220', '040 222 111', '040 111 222', '040 040', '220 220 111', '333 202 111 220', '111 040 222 111', '040 222 111',  # 48-55
    '111 220 220', '040 222 111 111', '333 220 111 202', '040 222 111', '220 220 220 220', '220 220 111', '111 220 220', '220 220',  # 56-63
    '111', '111 111', '111 111', '111 220 220', '022 022', '004 222 111', '022 022 111', '333 022 111 220',  # 64-71
    '111 111', '111 111 111', '111 202 202', '400 222 111 111', '040 222 111', '222 222 111 111', '202 333 022 111', '400 222 111',  # 72-79
    '202 202', '004 222 111', '111 202 202', '202 333 220 111', '004 222 111', '004 004', '111 111 222 004', '111 222 004',  # 80-87
    '202 202 111', '004 222 111 111', '202 202 202 202', '111 202 202', '202 333 220 111', '004 222 111', '111 202 202', '202 202',  # 88-95
    '111 111', '111 111 111', '111 022 022', '040 111 222 111', '022 022 111', '004 222 111 111', '022 022 022 022', '022 022 111',  # 96-103
    '111 111 111', '111 111 111 111', '004 222 111 111', '111 111 111', '040 222 111 111', '111 111 111', '022 022 111', '111 111',  # 104-111
    '400 222 111', '222 111 222 111', '333 022 111 202', '040 222 111', '333 220 022 111', '111 222 004', '111 022 022', '022 022',  # 112-119
    '400 222 111 111', '111 111 111', '202 202 111', '111 111', '220 220 111', '111 111', '111 111', '111',  # 120-127
    '111', '111 111', '111 111', '220 220 111', '111 111', '202 202 111', '111 111 111', '400 222 111 111',  # 128-135
    '022 022', '111 022 022', '111 222 004', '333 220 022 111', '040 222 111', '333 022 111 202', '222 111 222 111', '400 222 111',  # 136-143
    '111 111', '022 022 111', '111 111 111', '040 222 111 111', '111 111 111', '004 222 111 111', '111 111 111 111', '111 111 111',  # 144-151
    '022 022 111', '022 022 022 022', '004 222 111 111', '022 022 111', '040 111 222 111', '111 022 022', '111 111 111', '111 111',  # 152-159
    '202 202', '111 202 202', '004 222 111', '202 333 220 111', '111 202 202', '202 202 202 202', '004 222 111 111', '202 202 111',  # 160-167
    '111 222 004', '111 111 222 004', '004 004', '004 222 111', '202 333 220 111', '111 202 202', '004 222 111', '202 202',  # 168-175
    '400 222 111', '202 333 022 111', '222 222 111 111', '040 222 111', '400 222 111 111', '111 202 202', '111 111 111', '111 111',  # 176-183
    '333 022 111 220', '022 022 111', '004 222 111', '022 022', '111 220 220', '111 111', '111 111', '111',  # 184-191
    '220 220', '111 220 220', '220 220 111', '220 220 220 220', '040 222 111', '333 220 111 202', '040 222 111 111', '111 220 220',  # 192-199
    '040 222 111', '111 040 222 111', '333 202 111 220', '220 220 111', '040 040', '040 111 222', '040 222 111', '220 220',  # 200-207
    '400 222 111', '022 333 111 220', '400 222 111 111', '111 220 220', '222 222 111 111', '004 222 111', '111 111 111', '111 111',  # 208-215
    '333 022 111 202', '022 022 111', '111 202 202', '111 111', '040 111 222', '022 022', '111 111', '111',  # 216-223
    '400 111 222', '400 111 222 111', '333 022 111 220', '111 220 220', '111 333 022 202', '202 202 111', '022 022 111', '111 111',  # 224-231
    '111 222 222 111', '111 111 111', '004 222 111', '111 111', '040 222 111', '111 111', '022 022', '111',  # 232-239
    '400 400', '400 222 111', '400 222 111', '220 220', '400 222 111', '202 202', '111 111', '111',  # 240-247
    '400 222 111', '111 111', '202 202', '111', '220 220', '111', '111', '000',  # 248-255
)
# fmt: on


def _vectors() -> np.ndarray:
    """(256, 4, 3) absolute area vectors of each code's triangles (unused slots zero)."""
    out = np.zeros((256, 4, 3))
    for code, entry in enumerate(_AREA_VECTORS_IN_EIGHTHS):
        for j, triple in enumerate(entry.split()):
            out[code, j] = [int(ch) / 8 for ch in triple]
    return out


_VECTORS = _vectors()


@lru_cache(maxsize=64)
def surfel_areas(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area (in spacing units squared) of the surface inside each 2x2x2 neighbourhood code."""
    s0, s1, s2 = (float(s) for s in spacing)
    scaled = _VECTORS * np.array([s1 * s2, s0 * s2, s0 * s1])
    per_triangle = np.sqrt(np.einsum("cjk,cjk->cj", scaled, scaled))
    area = np.zeros(256)
    for j in range(per_triangle.shape[1]):  # summed triangle by triangle, as the reference does
        area += per_triangle[:, j]
    area.flags.writeable = False
    return area


@lru_cache(maxsize=64)
def contour_lengths(spacing: tuple[float, float]) -> np.ndarray:
    """Length of the contour (marching squares, edge midpoints) inside each 2x2 neighbourhood code.

    Bits: 8 top-left, 4 top-right, 2 bottom-left, 1 bottom-right (axis 0 downwards, axis 1 to the
    right). One or three pixels set: a diagonal cut through a corner; two pixels sharing a side: a
    straight segment across the square; two opposite pixels: two diagonal cuts.
    """
    s0, s1 = (float(s) for s in spacing)
    diag = 0.5 * np.sqrt(s0 * s0 + s1 * s1)
    length = np.zeros(16)
    for code in range(1, 15):
        bits = [(code >> k) & 1 for k in (3, 2, 1, 0)]  # top-left, top-right, bottom-left, bottom-right
        n = sum(bits)
        if n in (1, 3):
            length[code] = diag
        elif bits[0] == bits[1]:  # a full row set: the contour runs along axis 1
            length[code] = s1
        elif bits[0] == bits[2]:  # a full column set: the contour runs along axis 0
            length[code] = s0
        else:  # opposite corners
            length[code] = 2 * diag
    length.flags.writeable = False
    return length
