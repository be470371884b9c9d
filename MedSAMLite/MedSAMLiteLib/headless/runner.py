"""Run a folder of cases: one bad case never stops the others, and the exit status tells."""
from __future__ import annotations

import sys
import time
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.object_propagation import segment_3d_official
from ..core.propagate import segment_2d
from .cases import Case, CaseError, append_efficiency, atomic_savez, load_case
from .executor import ModelSettings, one_line, run_tasks, worker_backend

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
    skipped: list[str] = field(default_factory=list)  # finished by an earlier run (resume)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def report(self) -> str:
        skipped = f", {len(self.skipped)} skipped (finished before)" if self.skipped else ""
        lines = [f"{len(self.done)} case(s) segmented{skipped}, {len(self.failed)} failed"]
        lines += [f"  failed: {name}: {why}" for name, why in self.failed.items()]
        return "\n".join(lines)


def find_cases(in_dir: str | Path) -> list[Path]:
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input folder {in_dir} does not exist")
    return sorted(p for p in in_dir.glob("*.npz") if p.is_file())


@dataclass(frozen=True)
class PredictJob:
    """One challenge case for a worker (picklable): where it is, where its outputs go, how to segment."""

    path: Path
    out_dir: Path
    overlay_dir: Path | None = None
    official: bool = False
    model: ModelSettings = ModelSettings()


def predict_one(job: PredictJob, segmenter=None) -> dict:
    """Segment one case and write `<case>.npz` (segs) atomically; the worker's own model unless given
    one. Bad input is a "failed" result, never an exception."""
    from .overlay import case_overlay, save_overlay

    t0 = time.perf_counter()
    result = {"case": job.path.name}
    try:
        if segmenter is None:
            from ..core.segmenter import Segmenter
            from ..core.zoom import ZoomRule

            backend, load_seconds = worker_backend(job.model)
            t0 += load_seconds  # case time as before: reading, segmenting, writing
            segmenter = Segmenter(backend, zoom=ZoomRule() if job.model.zoom else None)
        case = load_case(job.path)
        segs = segment_case(segmenter, case, official=job.official)
        atomic_savez(job.out_dir / job.path.name, segs=segs)
        if job.overlay_dir is not None:
            save_overlay(job.overlay_dir / f"{case.name}.png", case_overlay(case, segs))
    except CaseError as e:
        return {**result, "status": "failed", "error": str(e)}
    except (MemoryError, RuntimeError, OSError) as e:
        return {**result, "status": "failed", "error": one_line(e)}
    return {**result, "status": "done", "seconds": time.perf_counter() - t0}


def predict_folder(segmenter, in_dir, out_dir, overlay_dir=None, official=False, quiet=False, resume=False,
                   workers=1, scheduler=None, model: ModelSettings | None = None) -> RunSummary:
    """Segment every *.npz of in_dir into out_dir, appending case,time to efficiency.csv. In this process
    with `segmenter`, or with `workers` > 1 / a `scheduler` on Dask (each worker loads `model` once);
    `resume` skips cases whose output exists."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    paths = find_cases(in_dir)
    if not paths and not quiet:
        _log(f"no .npz cases in {in_dir}")
    if resume:
        summary.skipped = [p.name for p in paths if (out_dir / p.name).is_file()]
        paths = [p for p in paths if p.name not in summary.skipped]
    jobs = [PredictJob(p, out_dir, Path(overlay_dir) if overlay_dir is not None else None, official, model or ModelSettings())
            for p in paths]
    local = workers <= 1 and not scheduler
    task = partial(predict_one, segmenter=segmenter) if local else predict_one
    for result in run_tasks(task, jobs, [p.name for p in paths], workers, scheduler, quiet):
        if result["status"] == "done":
            append_efficiency(out_dir / "efficiency.csv", result["case"], result["seconds"])
            summary.done.append(result["case"])
        else:
            summary.failed[result["case"]] = result["error"]
            if not quiet:
                _log(f"{result['case']}: {result['error']}")
    return summary
