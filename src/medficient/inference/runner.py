"""Run a folder of cases: one bad case never stops the others, and the exit status tells."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .cases import Case, CaseError, append_efficiency, atomic_savez, load_case
from .propagate import count_slice_steps, segment_2d, segment_3d, segment_3d_official

LONG_3D_SLICES = 20  # a per-slice progress bar from this many slice steps on


def segment_case(engine, case: Case, official: bool = False, show_slices: bool = False) -> np.ndarray:
    if case.kind == "2D":
        return segment_2d(engine, case.imgs, case.boxes, batched=not official)
    total = count_slice_steps(case.imgs.shape, case.boxes, engine.profile)
    bar = tqdm(total=total, desc=f"  {case.name}", unit="slice", leave=False, disable=not show_slices or total < LONG_3D_SLICES)
    try:
        if official:
            return segment_3d_official(engine, case.imgs, case.boxes, progress=bar.update)
        return segment_3d(engine, case.imgs, case.boxes, progress=bar.update)
    finally:
        bar.close()


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


def predict_folder(engine, in_dir, out_dir, overlay_dir=None, official=False, quiet=False) -> RunSummary:
    """Segment every *.npz of in_dir into out_dir, appending case,time to efficiency.csv."""
    from .overlay import case_overlay, save_overlay

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    paths = find_cases(in_dir)
    if not paths and not quiet:
        print(f"medficient: no .npz cases in {in_dir}", file=sys.stderr)
    for path in tqdm(paths, desc="cases", unit="case", disable=quiet or len(paths) < 2):
        t0 = time.perf_counter()
        try:
            case = load_case(path)
            segs = segment_case(engine, case, official=official, show_slices=not quiet)
            atomic_savez(out_dir / path.name, segs=segs)
            if overlay_dir is not None:
                save_overlay(Path(overlay_dir) / f"{case.name}.png", case_overlay(case, segs))
        except CaseError as e:
            summary.failed[path.name] = str(e)
            tqdm.write(f"medficient: {path.name}: {e}", file=sys.stderr)
            continue
        except (MemoryError, RuntimeError, OSError) as e:
            summary.failed[path.name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            tqdm.write(f"medficient: {path.name}: {summary.failed[path.name]}", file=sys.stderr)
            continue
        append_efficiency(out_dir / "efficiency.csv", path.name, time.perf_counter() - t0)
        summary.done.append(path.name)
    return summary
