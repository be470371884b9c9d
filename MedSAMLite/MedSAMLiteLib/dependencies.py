"""The extension's pip install, constrained so that it never changes a package already installed.

Slicer pins numpy, SimpleITK, scipy and others at build time and asks extensions never to change
them (Slicer issue #7230): an unconstrained `pip install -r requirements.txt` on Slicer 5.8 swaps
numpy 1.26 for 2.x. So the install passes pip every installed distribution, pinned, as a
constraint: pip picks the versions of openvino and opencv that fit what the running Slicer ships,
or fails before changing anything. Standard library only: this runs before openvino and opencv exist.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

REQUIREMENTS = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
# A plain public version (1.26.4, 2025.3.0, 4.11.0.86, 2.0.0rc1, 1.0.post1, 2.5.1+cpu) pins with `==`;
# anything else (a legacy, non-PEP 440 version) with `===`, which pip compares as a string.
_PLAIN_VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$", re.I)


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name (`SimpleITK` -> `simpleitk`, `opencv_python` -> `opencv-python`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """Canonical name -> version of every distribution this interpreter sees (the first on sys.path wins,
    as for imports)."""
    versions: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(canonical_name(name), dist.version)
    return versions


def constraints_text(versions: dict[str, str] | None = None) -> str:
    """A pip constraints file pinning every installed distribution (or VERSIONS) to its version."""
    versions = installed_versions() if versions is None else versions
    lines = [f"{name}{'==' if _PLAIN_VERSION.match(v) else '==='}{v}" for name, v in sorted(versions.items())]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def constraints_file() -> Iterator[Path]:
    """The constraints of `constraints_text()` in a temporary file that lives for the `with` block
    (pip reads it during the install; every Install click would otherwise leave one behind)."""
    fd, path = tempfile.mkstemp(prefix="medsamlite-", suffix="-constraints.txt")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(constraints_text())
        yield Path(path)
    finally:
        os.unlink(path)


@contextlib.contextmanager
def pip_install_arguments(requirements: str | Path = REQUIREMENTS) -> Iterator[list[str]]:
    """Arguments for `pip install`, valid for the `with` block, that add the extension's requirements to
    the running interpreter without changing any distribution installed now:
    `-r requirements.txt -c <every installed one, pinned>`."""
    with constraints_file() as constraints:
        yield ["-r", str(requirements), "-c", str(constraints)]


def changed_versions(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    """Distributions of BEFORE whose version differs in AFTER (None: removed): name -> (before, after)."""
    return {name: (v, after.get(name)) for name, v in before.items() if after.get(name) != v}
