"""The engine's messages: the one definition that Slicer's side (`client`) and the engine (`server`) both
import, so a renamed kind or field cannot drift between them.

Messages are these named tuples, pickled over the authenticated `multiprocessing.connection`; voxels
travel through shared memory and are only named here. Each request's arguments are listed in `OPS`; the
client refuses any other (a test holds `OPS` to the server's `do_<op>` signatures).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

# -- Slicer -> engine ---------------------------------------------------------------------------------------


class Hello(NamedTuple):
    """The engine's first message: its own PID (Slicer may have started a launcher that runs it as a child)."""

    pid: int


class Volume(NamedTuple):
    """A volume state's raw voxels are in the shared memory block `shm`, or, when `file`, in the file at
    that path (shared memory was too small); Slicer owns and frees both."""

    key: Any
    shm: str
    shape: tuple
    dtype: str
    file: bool = False


class Drop(NamedTuple):
    """Forget a volume state (sent after the requests that use it: the engine serves in order)."""

    key: Any


class Cancel(NamedTuple):
    """Stop task `task` at its next step; `stop`: the engine may exit if the task cannot stop (a load)."""

    task: int
    stop: bool


class Request(NamedTuple):
    """Run `op` with `args` (named as in OPS); `env` holds settings read per request (None: unset)."""

    op: str
    task: int
    args: dict
    env: dict


# -- engine -> Slicer ---------------------------------------------------------------------------------------


class Stage(NamedTuple):
    """What the task is doing now ("loading litemedsam"); `interruptible`: a Cancel acts at its next step."""

    task: int
    text: str
    interruptible: bool


class Progress(NamedTuple):
    task: int
    n: int


class PackedMask:
    """A boolean mask crop (D, H, W) sent as bits (np.packbits per row: 8x smaller to pickle), unpacked a
    few slices at a time by the slices read (`mask[a:b]`), so no main-thread call unpacks it whole."""

    def __init__(self, mask: np.ndarray) -> None:
        self.shape = tuple(mask.shape)
        self.bits = np.packbits(mask, axis=-1)

    def __getitem__(self, z) -> np.ndarray:
        return np.unpackbits(self.bits[z], axis=-1, count=self.shape[-1]).view(bool)

    def __len__(self) -> int:
        return self.shape[0]


class Partial(NamedTuple):
    """A result before the end (the middle slice of a 3D run): (crop, origin) as in a segment result."""

    task: int
    mask: tuple


class Done(NamedTuple):
    task: int
    result: Any


class Failed(NamedTuple):
    task: int
    error: str  # one line for the user


class Cancelled(NamedTuple):
    task: int


# -- requests ------------------------------------------------------------------------------------------------

IMAGE = ("volume", "size", "ijk_to_ras", "preset", "window", "image_key", "axes")
"""The keys of a request's `image`: which volume state, its grid, the preset, the cache key and the slice
layout (`axes`, see core/geometry.py `Geometry.resliced`; None: the canonical axial slices)."""

OPS: dict[str, tuple[str, ...]] = {
    "segment": ("backend", "zoom", "image", "box", "is2d", "emptySliceLimit", "vanishing"),
    "prefetch": ("backend", "image", "slices"),
    "download": ("name",),
    "import": ("name", "path"),
    "clear_cache": ("weights",),
    "embeddings": ("clear", "max_bytes"),
    "stats": ("backend",),
    "correct": ("backend", "zoom", "image", "box", "keys", "emptySliceLimit", "previous", "vanishing"),
}
"""Each request and the arguments it may take (the server's defaults apply to those left out)."""

AHEAD = frozenset({"clear_cache", "embeddings", "stats"})
"""Quick requests the engine serves before queued work (Slicer cancels a prefetch first), so the
main thread never waits behind a queue."""

ENV_PASSED = ("MEDSAMLITE_HOME",)
"""Environment read by the engine per request, so a changed setting applies at once."""


def request(op: str, task: int, args: dict, env: dict) -> Request:
    """A Request, refused (ValueError) if `op` or an argument is not in OPS."""
    if op not in OPS:
        raise ValueError(f"the engine has no request {op!r}")
    unknown = sorted(set(args) - set(OPS[op]))
    if unknown:
        raise ValueError(f"the engine's {op!r} takes no {', '.join(unknown)}")
    if "image" in args and set(args["image"]) != set(IMAGE):
        raise ValueError(f"an image names {', '.join(IMAGE)}; got {', '.join(sorted(args['image']))}")
    return Request(op, task, args, env)
