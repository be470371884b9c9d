"""SimpleITK, loaded on first use, and the one-line error every reader raises (`image_io` and `dicom`
both build on this, so neither imports the other at load time)."""
from __future__ import annotations

import re


class FormatError(ValueError):
    """An image, label map or mask that cannot be used; the message names the file and the problem."""


def load_sitk():
    """SimpleITK with its own warnings off (we check and report problems ourselves)."""
    try:
        import SimpleITK as sitk
    except ImportError as e:  # pragma: no cover - depends on the install
        raise FormatError("reading and writing medical formats needs SimpleITK: pip install 'medsamlite[formats]'") from e
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    return sitk


def sitk_reason(e: Exception) -> str:
    """The useful last line of a SimpleITK exception."""
    text = str(e).strip()
    match = re.search(r"sitk::ERROR:\s*(.*)", text, re.S)
    return (match.group(1) if match else text).strip().splitlines()[0] if text else type(e).__name__
