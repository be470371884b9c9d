"""Evaluate a folder of predictions against a folder of ground truths (cases in parallel).

Per case: DSC and NSD (metrics.py). A case's `status` is one of
* `ok`;
* `empty_prediction`: the prediction has none of the labels 1..max(gts) (scored: DSC 0, NSD 0);
* `missing_prediction`: no prediction file; scored as an empty prediction (DSC 0, NSD 0) and
  reported as a problem;
* `error`: the case could not be scored (unreadable file, missing key, shape mismatch, ...):
  DSC and NSD are empty (NaN) and the message says why.
`missing_prediction` and `error` are problems: one line each, and a non-zero exit status.
"""
from __future__ import annotations

import os
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .metrics import TOLERANCE, MetricError, score_case

OK, EMPTY_PREDICTION, MISSING_PREDICTION, ERROR = "ok", "empty_prediction", "missing_prediction", "error"
PROBLEMS = (MISSING_PREDICTION, ERROR)
CASE_COLUMNS = ["case", "dsc", "nsd"]


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def case_stem(name: str) -> str:
    return name[:-4] if name.endswith(".npz") else name


def case_kind(name: str) -> str | None:
    """'2D'/'3D' from the file name (PIPELINES.md §1), None when the name does not say."""
    return name[:2] if name.startswith(("2D", "3D")) else None


def case_modality(name: str) -> str:
    """Second `_`-separated field of the file name: 3DBox_MR_0001.npz -> MR."""
    parts = case_stem(name).split("_")
    return parts[1] if len(parts) > 1 and parts[1] else "unknown"


def _read_npz(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise MetricError(f"{path.name} has no {', '.join(repr(k) for k in missing)} (keys: {', '.join(data.files) or 'none'})")
            return {k: data[k] for k in keys + optional if k in data.files}
    except MetricError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MetricError(f"cannot read {path}: {detail}") from e


def evaluate_case(gt_path: str | Path, pred_path: str | Path, nsd_mode: str = "challenge", tolerance: float = TOLERANCE) -> dict:
    """Score one case; never raises for bad input (the row's status and message say what happened)."""
    gt_path, pred_path = Path(gt_path), Path(pred_path)
    name = gt_path.name
    row = {"case": name, "dim": case_kind(name) or "", "modality": case_modality(name), "dsc": np.nan, "nsd": np.nan,
           "status": OK, "message": "", "labels": [], "seconds": 0.0}
    t0 = time.perf_counter()
    try:
        gt = _read_npz(gt_path, ("gts",), ("spacing",))
        kind = row["dim"] or {2: "2D", 3: "3D"}.get(gt["gts"].ndim)
        if kind is None:
            raise MetricError(f"cannot tell 2D from 3D: name does not start with 2D/3D and gts has shape {gt['gts'].shape}")
        row["dim"] = kind
        missing = not pred_path.is_file()
        if missing:
            segs = np.zeros(gt["gts"].shape, np.uint8)
        else:
            segs = _read_npz(pred_path, ("segs",))["segs"]
        score = score_case(gt["gts"], segs, kind, gt.get("spacing"), nsd_mode, tolerance)
        row.update(dsc=score.dsc, nsd=score.nsd, labels=[asdict(s) for s in score.labels])
        if missing:
            row.update(status=MISSING_PREDICTION, message="no prediction file: scored as an empty prediction (DSC 0, NSD 0)")
        elif score.empty_prediction:
            row.update(status=EMPTY_PREDICTION, message="prediction is empty for every label (DSC 0, NSD 0)")
    except MetricError as e:
        row.update(status=ERROR, message=str(e), dsc=np.nan, nsd=np.nan, labels=[])
    except MemoryError:
        row.update(status=ERROR, message="out of memory", dsc=np.nan, nsd=np.nan, labels=[])
    row["seconds"] = time.perf_counter() - t0
    return row


def list_cases(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return sorted(p.name for p in folder.glob("*.npz") if p.is_file())


def evaluate_dir(
    pred_dir: str | Path,
    gt_dir: str | Path,
    workers: int | None = None,
    nsd_mode: str = "challenge",
    tolerance: float = TOLERANCE,
    progress: bool | None = None,
    desc: str = "evaluate",
) -> list[dict]:
    """Rows of `evaluate_case` for every ground-truth case, sorted by case name."""
    from tqdm import tqdm

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    names = list_cases(gt_dir)
    workers = default_workers() if workers is None else max(1, int(workers))
    progress = sys.stderr.isatty() if progress is None else progress
    jobs = [(gt_dir / n, pred_dir / n, nsd_mode, tolerance) for n in names]
    rows = []
    if workers == 1 or len(jobs) <= 1:
        with tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress) as bar:
            for job in jobs:
                rows.append(evaluate_case(*job))
                bar.update()
        return sorted(rows, key=lambda r: r["case"])
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        # submitted before the progress bar exists: workers start while this process has one thread
        futures = {pool.submit(evaluate_case, *job): job for job in jobs}
        with tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress) as bar:
            for future in as_completed(futures):
                try:
                    rows.append(future.result())
                except Exception as e:  # a worker died (e.g. killed for memory)
                    name = futures[future][0].name
                    rows.append({"case": name, "dim": case_kind(name) or "", "modality": case_modality(name),
                                 "dsc": np.nan, "nsd": np.nan, "status": ERROR, "labels": [], "seconds": 0.0,
                                 "message": f"evaluation failed: {type(e).__name__}: {e}"})
                bar.update()
    return sorted(rows, key=lambda r: r["case"])


def read_efficiency(path: str | Path) -> dict[str, float]:
    """case (without .npz) -> seconds from an efficiency.csv (`case,time`); the last row of a case wins."""
    import pandas as pd

    df = pd.read_csv(path)
    missing = {"case", "time"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: needs columns case,time (missing {', '.join(sorted(missing))})")
    times = pd.to_numeric(df["time"], errors="coerce")
    return {case_stem(str(c)): float(t) for c, t in zip(df["case"], times)}


def case_table(rows: list[dict], times: dict[str, float] | None = None):
    """Per-case DataFrame: case, dsc, nsd[, time], status, dim, modality, message."""
    import pandas as pd

    df = pd.DataFrame([{k: r[k] for k in ("case", "dsc", "nsd", "status", "dim", "modality", "message")} for r in rows],
                      columns=["case", "dsc", "nsd", "status", "dim", "modality", "message"])
    if times is not None:
        df.insert(3, "time", [times.get(case_stem(c), np.nan) for c in df["case"]])
    return df


def label_table(rows: list[dict]):
    import pandas as pd

    records = [{"case": r["case"], **s} for r in rows for s in r["labels"]]
    return pd.DataFrame(records, columns=["case", "label", "dsc", "nsd", "gt_voxels", "pred_voxels", "note"])


def modality_table(cases):
    """Mean, median and standard deviation of DSC, NSD (and time) per (dim, modality), then per dim."""
    import pandas as pd

    metrics = [m for m in ("dsc", "nsd", "time") if m in cases.columns]
    out = []
    groups = [((d, m), g) for (d, m), g in cases.groupby(["dim", "modality"], sort=True)]
    groups += [((d, "ALL"), g) for d, g in cases.groupby("dim", sort=True)]
    for (dim, modality), g in groups:
        rec = {"dim": dim, "modality": modality, "cases": len(g),
               "problems": int(g["status"].isin(PROBLEMS).sum())}
        for m in metrics:
            v = g[m].astype(float)
            rec.update({f"{m}_mean": v.mean(), f"{m}_median": v.median(), f"{m}_std": v.std()})
        out.append(rec)
    return pd.DataFrame(out)


def write_csv_atomic(df, path: str | Path, float_format: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: os.replace is atomic
    try:
        with open(tmp, "w", newline="") as f:
            df.to_csv(f, index=False, float_format=float_format)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def output_paths(csv: str | Path) -> dict[str, Path]:
    csv = Path(csv)
    stem = csv.name[:-4] if csv.name.endswith(".csv") else csv.name
    return {"cases": csv, "labels": csv.with_name(f"{stem}_labels.csv"), "modality": csv.with_name(f"{stem}_modality.csv")}


def write_outputs(rows: list[dict], csv: str | Path, times: dict[str, float] | None = None) -> dict[str, Path]:
    """The official-style CSV (case,dsc,nsd[,time],status; 4 decimals) and the two detail tables."""
    paths = output_paths(csv)
    cases = case_table(rows, times)
    main_cols = CASE_COLUMNS + (["time"] if times is not None else []) + ["status"]
    write_csv_atomic(cases[main_cols], paths["cases"], float_format="%.4f")
    write_csv_atomic(label_table(rows), paths["labels"], float_format="%.6f")
    write_csv_atomic(modality_table(cases), paths["modality"], float_format="%.4f")
    return paths
