"""`medsamlite batch` on a small real cohort (LiteMedSAM, f32): cases per hour in one process against a
local Dask cluster, the per-case cost split (read, preset, encode, decode, write), the model load per
worker, a resumed rerun, and whether every mask equals `medsamlite segment`'s for the same prompts.

The cohort: MNI152 T1 slabs (from the nilearn wheel, as headless/samples.py), half of them as NIfTI and
half as DICOM series written from them; box rows and RECIST rows alternate, one case has two objects.

Usage: .venv/bin/python benchmarks/bench_batch.py [--cases 8] [--slices 6] [--workers 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import REPO, load, machine_line

MODULE_DIR = REPO / "MedSAMLite"
sys.path.insert(0, str(MODULE_DIR))


def make_cohort(folder: Path, cases: int, slices: int) -> Path:
    """Scans in folder/scans, prompts in folder/prompts.csv (returned)."""
    import nibabel as nib

    from MedSAMLiteLib.headless.samples import dicom_series_from, mni152_paths

    t1 = nib.load(mni152_paths()["t1"])
    scans = folder / "scans"
    scans.mkdir(parents=True)
    rows = ["case,object,label,box,recist,space"]
    for n in range(cases):
        z = 50 + n * (110 // cases)
        img = t1.slicer[30:160, 40:190, z:z + slices]
        nifti = scans / f"mni{n}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), nifti)
        if n % 2:
            dicom_series_from(nifti, scans / f"mni{n}_dicom", f"1.2.826.0.1.3680043.2.1125.1.30.{n}")
            nifti.unlink()
            name = f"mni{n}_dicom"
        else:
            name = f"mni{n}"
        last = slices - 1
        if n % 4 in (0, 1):
            rows.append(f'{name},brain,,"20,20,0,110,130,{last}",,')
        else:
            rows.append(f'{name},lesion,,,"40,60,80,80,{last // 2}",')
        if n == 0:
            rows.append(f'{name},left,2,"65,30,1,110,120,{max(1, last - 1)}",,')
    (folder / "prompts.csv").write_text("\n".join(rows) + "\n")
    return folder / "prompts.csv"


def batch(scans: Path, table: Path, out: Path, *extra: str) -> float:
    """Seconds from process start to exit of one `medsamlite batch` (this worktree's code)."""
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "MedSAMLiteLib.headless.cli", "batch", str(scans), "--prompts", str(table),
                           "-o", str(out), "-q", *extra], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return seconds


def summary(out: Path) -> list[dict]:
    with open(out / "summary.csv") as f:
        return list(csv.DictReader(f))


def same_as_segment(out: Path, reference: Path) -> list[str]:
    """Cases whose batch mask differs from `medsamlite segment` run on the same scan with the boxes batch
    recorded, in row order (segment numbers them 1..N; batch's label values are then applied)."""
    import SimpleITK as sitk

    from MedSAMLiteLib.headless.cli import main

    differ = []
    for sidecar in sorted(out.glob("*.json")):
        info = json.loads(sidecar.read_text())
        path = reference / f"{info['case']}.nii.gz"
        if not path.exists():
            boxes = [f"--box={','.join(f'{v:g}' for v in o['box'])}" for o in info["objects"]]
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                assert main(["segment", info["source"], *boxes, "-q", "-o", str(path)]) == 0
        expected = np.array([0] + [o["label"] for o in info["objects"]])[sitk.GetArrayFromImage(sitk.ReadImage(str(path)))]
        if not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / info["mask"]))), expected):
            differ.append(info["case"])
    return differ


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--slices", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2, help="local cluster size to compare with 1 process")
    ap.add_argument("--keep", help="build the cohort in this folder and keep it")
    args = ap.parse_args()

    print(machine_line(sys.orig_argv) + "\n")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medsamlite-batch-bench-"))
    table = make_cohort(root, args.cases, args.slices)
    scans = root / "scans"
    runs = {}
    before = load()
    for label, extra in (("1 process (--workers 1)", ["--workers", "1"]),
                         (f"local cluster (--workers {args.workers})", ["--workers", str(args.workers)])):
        out = root / f"out_{extra[1]}"
        seconds = batch(scans, table, out, *extra)
        rows = summary(out)
        assert all(r["status"] == "done" for r in rows), rows
        resumed = batch(scans, table, out, *extra)
        assert all(r["status"] == "skipped" for r in summary(out))
        runs[label] = (out, seconds, rows, resumed)
    after = load()
    reference = root / "segment"
    reference.mkdir(exist_ok=True)

    print(f"{args.cases} cases of {args.slices} slices (130 x 150 voxels; {sum(1 for p in scans.iterdir() if p.is_dir())} "
          f"DICOM series, the rest NIfTI; box and RECIST rows); load average before {before}, after {after}\n")
    print("| run | wall (s) | cases/hour | resumed rerun (s) | masks = `segment` |")
    print("|---|---|---|---|---|")
    for label, (out, seconds, rows, resumed) in runs.items():
        differ = same_as_segment(out, reference)
        print(f"| {label} | {seconds:.1f} | {3600 * len(rows) / seconds:.0f} | {resumed:.1f} | "
              f"{'all ' + str(len(rows)) + ' identical' if not differ else 'DIFFER: ' + ', '.join(differ)} |")
    print("\nPer-case cost split, median seconds over the cases (model load excluded; encode = encoder calls,"
          " decode = the rest of the segmentation: decoder, pre/post-processing):\n")
    print("| run | read | preset | encode | decode | write | case total | model load per worker |")
    print("|---|---|---|---|---|---|---|---|")
    for label, (_, _, rows, _) in runs.items():
        med = {k: statistics.median(float(r[k]) for r in rows) for k in ("read_s", "preset_s", "encode_s", "decode_s", "write_s", "seconds")}
        loads = [float(r["model_load_s"]) for r in rows if float(r["model_load_s"]) > 0]
        print(f"| {label} | {med['read_s']:.3f} | {med['preset_s']:.3f} | {med['encode_s']:.2f} | {med['decode_s']:.2f} | "
              f"{med['write_s']:.3f} | {med['seconds']:.2f} | {', '.join(f'{v:.2f}' for v in loads)} s ({len(loads)} load(s)) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
