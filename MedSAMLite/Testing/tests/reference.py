"""Reference data (rule weights, golden outputs, tolerances) for the tests: numpy, plus cv2 for the images.

Two sources, one interface:
- the compact set in the repository (`MedSAMLite/Testing/Data/reference`, the default): every key
  list, the input images (lossless PNG) and every golden array at full float32 precision, except
  the two big ones, of which it keeps a regular subset (KEPT). `golden()` returns those at their
  full shape with NaN where nothing was kept; the assert helpers compare the kept values only.
- the whole set (`$MEDSAMLITE_REFERENCE`, the folder described by its README): everything whole.
  Tests that feed a golden embedding to a decoder need it (`requires_full_reference`); without it
  the decoders are still checked against the goldens through the encoders' embeddings.

`python reference.py make FULL_FOLDER` rewrites the compact set from the whole one.
"""
from __future__ import annotations

import math
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
COMPACT = REPO / "MedSAMLite" / "Testing" / "Data" / "reference"
FULL = Path(os.environ["MEDSAMLITE_REFERENCE"]) if os.environ.get("MEDSAMLITE_REFERENCE") else None
NAMES = ["lite_medsam", "medficient_l0", "medficient_l1", "medficient_l2", "repvit_medsam_m11", "medsam_vit_b"]
GOLDENS = [*NAMES, "lite_medsam_real", "repvit_medsam_m11_fused"]
KEY_LISTS = [*NAMES, "repvit_medsam_m11_fused"]
BOX_256 = np.array([60, 70, 180, 200], dtype=np.float32)
# What the compact set keeps of the two big arrays: every 32nd embedding channel (8 of 256, all
# positions) and every 4th logits row (64 of 256, whole rows). Every other array is kept whole.
KEPT = {"embedding": np.s_[:, ::32], "low_res_logits": np.s_[:, :, ::4]}

requires_full_reference = pytest.mark.skipif(
    FULL is None, reason="needs the whole reference set (set MEDSAMLITE_REFERENCE to its folder)"
)


def genuine_lite_medsam() -> Path:
    """The released lite_medsam.pth, verified, from the model store (fetched once if missing:
    the tests check the real file, they do not skip without it)."""
    from MedSAMLiteLib.models.store import fetch_weights

    return fetch_weights("litemedsam")


def _folder() -> Path:
    if FULL is not None and not FULL.is_dir():
        raise FileNotFoundError(f"MEDSAMLITE_REFERENCE={FULL} is not a folder")
    return FULL or COMPACT


def read_keys(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in (_folder() / f"{name}.keys.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.split(",")) if shape else (), dtype))
    return rows


def rule_value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The reference README's deterministic weight rule, literally."""
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    if key.endswith("running_var"):
        value = 1.0 + 0.1 * rng.random(shape)
    elif key.endswith("running_mean"):
        value = 0.1 * rng.standard_normal(shape)
    elif len(shape) >= 2:
        value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
    elif key.endswith("weight"):
        value = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        value = 0.1 * rng.standard_normal(shape)
    return np.asarray(value).astype(np.float32)


def rule_weights(name: str) -> dict[str, np.ndarray]:
    """Rule weights for every key of NAME, in its state_dict order (key -> numpy array)."""
    return {key: rule_value(key, shape) for key, shape, _ in read_keys(name)}


def golden(name: str) -> dict[str, np.ndarray]:
    """The golden arrays of NAME; from the compact set, KEPT arrays at full shape, NaN where not kept."""
    if FULL is None:
        return compact_golden(name)
    with np.load(_folder() / f"{name}.golden.npz") as z:
        return {k: z[k] for k in z.files}


def compact_golden(name: str) -> dict[str, np.ndarray]:
    with np.load(COMPACT / f"{name}.golden.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for key, index in KEPT.items():
        whole = np.full(tuple(arrays.pop(f"{key}.shape")), np.nan, np.float32)
        whole[index] = arrays[key]
        arrays[key] = whole
    return arrays


def reference_image(size: int) -> np.ndarray:
    """image_S.npy of the README: (S, S, 3) uint8 RGB."""
    return np.load(_folder() / f"image_{size}.npy") if FULL is not None else compact_image(size)


def compact_image(size: int) -> np.ndarray:
    """The compact set's copy of image_S.npy, a lossless PNG (cv2 reads it as BGR)."""
    import cv2

    return cv2.imdecode(np.fromfile(str(COMPACT / f"image_{size}.png"), np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]


def reference_input(size: int) -> np.ndarray:
    """The README's network input: image_S.npy / 255 as (1, 3, S, S) float32."""
    image = reference_image(size)
    return np.ascontiguousarray((image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])


def _kept(actual, expected, what: str) -> tuple[np.ndarray, np.ndarray]:
    """ACTUAL and EXPECTED (same shape) at the positions the reference holds (not NaN), as float64."""
    a = np.asarray(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != {expected.shape}"
    kept = ~np.isnan(expected)
    assert kept.any(), f"{what}: the reference holds no value"
    return a[kept].astype(np.float64), expected[kept].astype(np.float64)


def assert_close_big(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """README tolerance for embeddings and logits: max <= 1e-4*s, mean <= 1e-5*s, s = max(1, max|g|)."""
    a, e = _kept(actual, expected, what)
    scale = max(1.0, float(np.abs(e).max()))
    diff = np.abs(a - e)
    assert diff.max() <= 1e-4 * scale, f"{what}: max abs diff {diff.max():.3g} > {1e-4 * scale:.3g}"
    assert diff.mean() <= 1e-5 * scale, f"{what}: mean abs diff {diff.mean():.3g} > {1e-5 * scale:.3g}"


def assert_close_small(actual: np.ndarray, expected: np.ndarray, what: str, tol: float = 1e-5) -> None:
    a, e = _kept(actual, expected, what)
    diff = float(np.abs(a - e).max())
    assert diff <= tol, f"{what}: max abs diff {diff:.3g} > {tol}"


def make_compact(full: Path, out: Path = COMPACT) -> None:
    """Write the compact set from the whole set FULL (see the module docstring); checks the PNGs."""
    import shutil

    import cv2

    out.mkdir(parents=True, exist_ok=True)
    for name in KEY_LISTS:
        shutil.copyfile(full / f"{name}.keys.tsv", out / f"{name}.keys.tsv")
    for size in (256, 512, 1024):
        image = np.load(full / f"image_{size}.npy")
        ok, png = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok
        png.tofile(str(out / f"image_{size}.png"))
        assert np.array_equal(cv2.imdecode(png, cv2.IMREAD_UNCHANGED)[..., ::-1], image)
    for name in GOLDENS:
        with np.load(full / f"{name}.golden.npz") as z:
            arrays = {k: z[k] for k in z.files}
        for key, index in KEPT.items():
            arrays[f"{key}.shape"] = np.array(arrays[key].shape, np.int64)
            arrays[key] = np.ascontiguousarray(arrays[key][index])
        np.savez_compressed(out / f"{name}.golden.npz", **arrays)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit("usage: python reference.py make FULL_REFERENCE_FOLDER")
    make_compact(Path(sys.argv[2]))
