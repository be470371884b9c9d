"""Run a folder of cases: one bad case never stops the others, and the exit status tells."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.object_propagation import segment_3d_official
from ..core.propagate import segment_2d
from .cases import Case, CaseError, append_efficiency, atomic_savez, load_case

LONG_3D_SLICES = 20  # a per-slice progress line from this many slice steps on


def _log(message: str) -> None:
    print(f"medsamlite: {message}", file=sys.stderr)


class SliceProgress:
    """`done/total slices` on one stderr line, for long 3D cases."""

    def __init__(self, name: str, total: int, show: bool) -> None:
        self.name, self.total, self.done = name, total, 0
        self.show = show and total >= LONG_3D_SLICES and sys.stderr.isatty()

    def __call__(self, n: int = 1) -> None:
        self.done += n
        if self.show:
            print(f"\r  {self.name}: {self.done}/{self.total} slices", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.show:
            print(file=sys.stderr)


def segment_case(segmenter, case: Case, official: bool = False, show_slices: bool = False) -> np.ndarray:
    """Label map of one case; `official` = the published order (no embedding reuse, one box per call)."""
    if case.kind == "2D":
        if official:
            return segment_2d(segmenter.backend, case.imgs, case.boxes, batched=False)
        segmenter.set_image(case.imgs[None])
        return segmenter.label_2d(0, case.boxes)
    if official:
        return segment_3d_official(segmenter.backend, case.imgs, case.boxes)
    segmenter.set_image(case.imgs)
    progress = SliceProgress(case.name, segmenter.slice_steps(case.boxes), show_slices)
    try:
        return segmenter.label_3d(case.boxes, progress=progress)
    finally:
        progress.close()


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def report(self) -> str:
        lines = [f"{len(self.done)} case(s) segmented, {len(self.failed)} failed"]
        lines += [f"  failed: {name}: {why}" for name, why in self.failed.items()]
        return "\n".join(lines)


def find_cases(in_dir: str | Path) -> list[Path]:
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input folder {in_dir} does not exist")
    return sorted(p for p in in_dir.glob("*.npz") if p.is_file())


def predict_folder(segmenter, in_dir, out_dir, overlay_dir=None, official=False, quiet=False) -> RunSummary:
    """Segment every *.npz of in_dir into out_dir, appending case,time to efficiency.csv."""
    from .overlay import case_overlay, save_overlay

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    paths = find_cases(in_dir)
    if not paths and not quiet:
        _log(f"no .npz cases in {in_dir}")
    for path in paths:
        t0 = time.perf_counter()
        try:
            case = load_case(path)
            segs = segment_case(segmenter, case, official=official, show_slices=not quiet)
            atomic_savez(out_dir / path.name, segs=segs)
            if overlay_dir is not None:
                save_overlay(Path(overlay_dir) / f"{case.name}.png", case_overlay(case, segs))
        except CaseError as e:
            summary.failed[path.name] = str(e)
            _log(f"{path.name}: {e}")
            continue
        except (MemoryError, RuntimeError, OSError) as e:
            summary.failed[path.name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            _log(f"{path.name}: {summary.failed[path.name]}")
            continue
        append_efficiency(out_dir / "efficiency.csv", path.name, time.perf_counter() - t0)
        summary.done.append(path.name)
    return summary
