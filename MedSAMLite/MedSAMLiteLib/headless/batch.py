"""`medsamlite batch`: a folder (or list) of scans + a prompt table -> one label image per case (docs/batch.md).

Each case is one task (executor.py: here, a local Dask cluster or an existing one). A task reads the
scan, applies the preset, turns its rows into boxes, segments exactly as `segment` does, and writes
`<case>.nii.gz` (on the scan's grid; label = the row's label) then `<case>.json` (object names, boxes,
timings), both atomically: the sidecar is written last, so it marks a finished case and a rerun
skips it (unless the rows or settings changed, or --force). `summary.csv` lists every case.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .executor import ModelSettings, executor_args, one_line, prepare_model, workers_and_threads

SUMMARY_COLUMNS = ("case", "objects", "seconds", "status", "error", "read_s", "preset_s", "encode_s", "decode_s",
                   "write_s", "model_load_s", "worker")
MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
SCAN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class BatchSettings:
    model: ModelSettings
    modality: str | None = None
    preset: str | None = None
    window: str | None = None
    recist_margin: float = 0.10
    mask_suffix: str = ".nii.gz"


@dataclass(frozen=True)
class CaseJob:
    case: str
    source: str
    rows: tuple
    out_dir: str
    settings: BatchSettings
    digest: str


def register(sub: argparse._SubParsersAction) -> None:
    from .commands import backend_args
    from .format_commands import preset_args

    b = sub.add_parser("batch", help="segment a folder of scans from a table of prompts (boxes, RECIST lines, label files)")
    b.add_argument("input", help="folder of scans (NIfTI, NRRD, MHA, DICOM series subfolders, ...) or a text file listing them")
    b.add_argument("--prompts", required=True, metavar="TABLE", help="CSV or JSON: case, object, label, box|recist|labels, space (docs/batch.md)")
    b.add_argument("-o", "--output", required=True, help="folder for <case>.nii.gz, <case>.json and summary.csv")
    preset_args(b)
    backend_args(b)
    b.add_argument("--recist-margin", type=float, default=0.10, help="RECIST box reach beyond half the long axis (default 0.10)")
    b.add_argument("--mask-format", default=".nii.gz", choices=MASK_SUFFIXES, help="label image format (default .nii.gz)")
    executor_args(b)
    b.set_defaults(func=_batch)


class ScanClash(str):
    """Stands for a case name that two scans share (a case with rows naming it fails with this text)."""


def find_scans(source: str | Path) -> dict[str, Path | ScanClash]:
    """Case name -> scan: a folder's image files and subfolders (DICOM series), or a list file's lines
    (relative to the list). The case name is the file name without its suffix, or the folder's name."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if not p.name.startswith(".") and (p.is_dir() or _suffix(p) in SCAN_SUFFIXES))
    elif source.is_file():
        lines = [ln.strip() for ln in source.read_text().splitlines()]
        paths = [Path(ln) if Path(ln).is_absolute() else source.parent / ln for ln in lines if ln and not ln.startswith("#")]
    else:
        raise FileNotFoundError(f"{source}: no such folder or list file")
    scans: dict[str, Path | ScanClash] = {}
    for p in paths:
        name = p.name[: -len(_suffix(p))] if _suffix(p) else p.name
        if name in scans:  # ct1.nii.gz and ct1.nrrd: which one the table means is unknown
            scans[name] = ScanClash(f"{scans[name]} and {p} are both case {name!r}; rename one")
        else:
            scans[name] = p
    return scans


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in SCAN_SUFFIXES if name.endswith(s)), "")


def plan(scans: dict[str, Path], rows: list, bad: list, out_dir: Path, settings: BatchSettings) -> tuple[list[CaseJob], list[dict]]:
    """-> (jobs, failures): one job per case named in the table, in table order; a case with a bad
    row or no scan fails with one line."""
    order, by_case, failures = [], {}, {}
    for row in rows:
        key = _case_key(row.case, scans)
        if key not in by_case:
            order.append(key)
            by_case[key] = []
        by_case[key].append(row)
    for b in bad:
        key = _case_key(b.case, scans) if b.case else f"({b.where})"
        failures.setdefault(key, b.error)
    jobs = []
    for key in order:
        if key in failures:
            continue
        if key not in scans:
            failures[key] = f"{by_case[key][0].where}: no scan named {key!r} in the input"
            continue
        if isinstance(scans[key], ScanClash):
            failures[key] = str(scans[key])
            continue
        rows_ = tuple(by_case[key])
        jobs.append(CaseJob(key, str(scans[key]), rows_, str(out_dir), settings, _digest(scans[key], rows_, settings)))
    return jobs, [{"case": k, "status": "failed", "error": e} for k, e in failures.items()]


def _case_key(case: str, scans: dict[str, Path]) -> str:
    """The table may name a case by its file name ("ct1.nii.gz") or without the suffix ("ct1")."""
    if case in scans:
        return case
    suffix = _suffix(Path(case))
    return case[: -len(suffix)] if suffix else case


def _digest(source: Path, rows: tuple, settings: BatchSettings) -> str:
    """What a finished case was made from: a changed row or setting makes --resume redo it."""
    made_with = asdict(settings)
    made_with["model"].pop("threads")  # how many threads ran it does not change the masks
    text = json.dumps([str(source), [asdict(r) for r in rows], made_with], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_finished(job: CaseJob) -> bool:
    out = Path(job.out_dir)
    try:
        sidecar = json.loads((out / f"{job.case}.json").read_text())
    except (OSError, ValueError):
        return False
    return sidecar.get("digest") == job.digest and (out / sidecar.get("mask", "")).is_file()


def case_objects(rows: tuple, image, margin: float) -> list[dict]:
    """Rows -> objects in row order: label, name, voxel box, prompt kind, table line. Label files give
    one object per label value (ascending) that keeps its value; a missing label takes the next free value."""
    from .boxes import prompt_boxes
    from .cases import Case, CaseError, validate
    from .image_io import read_labels
    from .labels import LabelError, boxes_from_labels
    from .prompt_table import recist_box

    objects = []
    for row in rows:
        try:
            if row.kind == "box":
                found = [(row.label, row.name, prompt_boxes([list(row.values)], image.kind, image.geometry, row.world)[0])]
            elif row.kind == "recist":
                found = [(row.label, row.name, recist_box(row.values, image.geometry, row.world, margin, image.kind))]
            else:
                _, boxes, values = boxes_from_labels(read_labels(row.path, image))
                if len(boxes) == 0:
                    raise ValueError(f"{row.path}: the label map holds no object")
                stem = row.name or "label"
                if row.label is not None and len(boxes) > 1:
                    raise ValueError(f"{row.path} holds {len(boxes)} labels; a label column fits a file of one only")
                found = [(row.label or int(v), f"{stem}_{v}", b) for b, v in zip(boxes, values)]
            for label, name, box in found:
                validate(Case(row.case, image.kind, _probe(image), box[None].astype(float)))
                objects.append({"label": label, "name": name, "prompt": row.kind, "box": [float(v) for v in box], "row": row.where})
        except (ValueError, CaseError, LabelError) as e:
            raise ValueError(f"{row.where}: {one_line(e)}") from None
    taken = [o["label"] for o in objects if o["label"] is not None]
    if len(set(taken)) != len(taken):
        raise ValueError(f"label {next(v for v in taken if taken.count(v) > 1)} given to two objects")
    free = (v for v in range(1, 65536) if v not in set(taken))
    for o in objects:
        if o["label"] is None:
            o["label"] = next(free)
        o["name"] = o["name"] or f"object_{o['label']}"
    return objects


def _probe(image):
    """A zero-cost stand-in of the uint8 array with the image's shape (validate only reads shape and dtype)."""
    import numpy as np

    shape = image.array.shape if image.kind == "3D" else image.array.shape[:2]
    return np.broadcast_to(np.zeros((), np.uint8), shape)


def segment_one(job: CaseJob) -> dict:
    """One case, as `segment` would do it, then mask + sidecar; any error -> a "failed" result line."""
    import numpy as np

    from ..core.presets import parse_window
    from ..core.segmenter import Segmenter
    from ..core.zoom import ZoomRule
    from .cases import Case, atomic_write_text, validate
    from .executor import worker_backend, worker_name
    from .image_io import read_image, write_mask
    from .runner import segment_case

    t0 = time.perf_counter()
    result = {"case": job.case, "worker": worker_name()}
    try:
        s = job.settings
        backend, result["model_load_s"] = worker_backend(s.model)
        t = time.perf_counter()
        image = read_image(job.source)
        result["read_s"], t = time.perf_counter() - t, time.perf_counter()
        imgs = image.to_uint8(s.preset, parse_window(s.window) if s.window else None, s.modality or image.modality)
        result["preset_s"] = time.perf_counter() - t
        objects = case_objects(job.rows, image, s.recist_margin)
        boxes = np.asarray([o["box"] for o in objects], dtype=np.float64)
        case = Case(job.case, image.kind, imgs, boxes, image.spacing if image.kind == "3D" else None)
        validate(case)
        encoded, t = backend.stats.encoder_seconds, time.perf_counter()
        segs = segment_case(Segmenter(backend, zoom=ZoomRule() if s.model.zoom else None), case)
        result["encode_s"] = backend.stats.encoder_seconds - encoded
        result["decode_s"] = time.perf_counter() - t - result["encode_s"]
        t = time.perf_counter()
        lut = np.array([0] + [o["label"] for o in objects], dtype=np.uint16)
        out = Path(job.out_dir)
        mask = write_mask(lut[segs], image, out / f"{job.case}{s.mask_suffix}")
        result["write_s"] = time.perf_counter() - t
        result.update(status="done", objects=len(objects), seconds=time.perf_counter() - t0 - result["model_load_s"])
        sidecar = {"case": job.case, "source": job.source, "mask": mask.name, "digest": job.digest, "objects": objects,
                   "notes": image.notes, "settings": asdict(s), "run": {k: v for k, v in result.items() if k != "case"}}
        atomic_write_text(out / f"{job.case}.json", json.dumps(sidecar, indent=1) + "\n")
    except Exception as e:  # noqa: BLE001 - one bad case is one summary line, never the end of the run
        result.update(status="failed", error=one_line(e), seconds=time.perf_counter() - t0)
    return result


def run_batch(jobs: list[CaseJob], failures: list[dict], out_dir: Path, resume: bool, workers: int,
              scheduler: str | None, quiet: bool) -> list[dict]:
    """Run the unfinished jobs; summary.csv lists every case (also after Ctrl+C, then re-raised)."""
    from .executor import run_tasks

    results = {f["case"]: f for f in failures}
    todo = []
    for job in jobs:
        if resume and is_finished(job):
            sidecar = json.loads((out_dir / f"{job.case}.json").read_text())
            results[job.case] = {**sidecar["run"], "case": job.case, "status": "skipped"}
        else:
            todo.append(job)
    if not quiet and len(todo) < len(jobs):
        _log(f"{len(jobs) - len(todo)} case(s) already finished, skipped (--force redoes them)")
    try:
        for result in run_tasks(segment_one, todo, [j.case for j in todo], workers, scheduler, quiet):
            results[result["case"]] = result
            if result["status"] == "failed" and not quiet:
                _log(f"{result['case']}: {result['error']}")
    except KeyboardInterrupt:
        for job in todo:
            results.setdefault(job.case, {"case": job.case, "status": "interrupted", "error": "stopped by Ctrl+C; rerun to resume"})
        raise
    finally:
        order = [j.case for j in jobs] + [f["case"] for f in failures]
        write_summary(out_dir / "summary.csv", [results[c] for c in order if c in results])
        _remove_leftovers(out_dir, [j.case for j in todo])
    return [results[c] for c in order]


def write_summary(path: Path, results: list[dict]) -> None:
    from .cases import atomic_write_text

    text = io.StringIO()
    writer = csv.DictWriter(text, SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, text.getvalue())


def _remove_leftovers(out_dir: Path, cases: list[str]) -> None:
    """Temp files of a worker killed while writing (`.<name>.*`); the finished outputs are complete."""
    import glob
    import shutil

    for case in cases:
        for p in out_dir.glob(f".{glob.escape(case)}.*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _log(message: str) -> None:
    print(f"medsamlite: {message}", file=sys.stderr)


def _batch(args: argparse.Namespace) -> int:
    from ..core.presets import parse_window
    from .prompt_table import TableError, read_table

    workers, threads = workers_and_threads(args)
    try:
        if args.window:
            parse_window(args.window)
        rows, bad = read_table(args.prompts)
        scans = find_scans(args.input)
    except (TableError, FileNotFoundError, ValueError, OSError) as e:
        _log(one_line(e))
        return 2
    if args.recist_margin < 0:
        _log("--recist-margin must not be negative")
        return 2
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = BatchSettings(ModelSettings(args.backend, args.precision, threads, args.zoom), args.modality,
                             args.preset, args.window, args.recist_margin, args.mask_format)
    jobs, failures = plan(scans, rows, bad, out_dir, settings)
    if any(not (args.resume and not args.force and is_finished(j)) for j in jobs) and not args.scheduler:
        prepare_model(settings.model)
    results = run_batch(jobs, failures, out_dir, args.resume and not args.force, workers, args.scheduler, args.quiet)
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"{out_dir / 'summary.csv'}: {counts['done']} done, {counts['skipped']} skipped (finished before), "
          f"{counts['failed']} failed", file=sys.stderr)
    return 1 if counts["failed"] else 0
