"""`medsamlite batch` on small real scans (MNI152 NIfTI crops, a DICOM series written from one, pydicom's CT
slice; genuine LiteMedSAM weights): masks identical to `medsamlite segment` case by case, in this process and
on a local Dask cluster of 2 worker processes (one of them killed mid-run), resumable after Ctrl+C, bad rows
and unreadable scans reported and skipped, and on a separately started `dask scheduler` + 2 `dask worker`s.

Expected boxes (RECIST, label file, world box) are worked out by hand or with nibabel, never by the code
under test. Volumes have 2 slices so the whole file runs in well under a minute on 2 cores."""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from MedSAMLiteLib.core.geometry import Geometry
from MedSAMLiteLib.headless.cli import main
from MedSAMLiteLib.headless.prompt_table import read_table, recist_box
from MedSAMLiteLib.headless.samples import dicom_series_from, mni152_paths
from test_formats_cli import _world_box  # voxel box -> RAS mm corners by hand with nibabel

pytest.importorskip("distributed")
MODULE_DIR = Path(__file__).resolve().parents[2]  # MedSAMLite/: the code under test, for child processes
CASES = ("brain_a", "brain_b", "brain_dicom", "ct_small")


def _crop(kind, region, path):
    img = nib.load(mni152_paths()[kind]).slicer[region]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), path)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """scans/ (4 good scans, an unreadable one, one with only a bad row), prompts.csv, and per case the
    `segment` arguments that mean the same prompts, with label values as the table gives them."""
    root = tmp_path_factory.mktemp("cohort")
    scans = root / "scans"
    scans.mkdir()
    region_a = (slice(40, 136), slice(50, 162), slice(75, 77))
    _crop("t1", region_a, scans / "brain_a.nii.gz")
    gm = nib.load(_crop("gm", region_a, root / "gm_prob.nii.gz"))
    gm_labels = (np.asarray(gm.dataobj) > 127).astype(np.uint8) * 4
    nib.save(nib.Nifti1Image(gm_labels, gm.affine), root / "gm.nii.gz")
    _crop("t1", (slice(45, 141), slice(60, 172), slice(90, 92)), scans / "brain_b.nii.gz")
    _crop("t1", (slice(50, 146), slice(55, 167), slice(60, 62)), root / "c.nii.gz")
    dicom_series_from(root / "c.nii.gz", scans / "brain_dicom", "1.2.826.0.1.3680043.2.1125.1.30")
    shutil.copy(get_testdata_file("CT_small.dcm"), scans / "ct_small.dcm")
    (scans / "broken.nii.gz").write_bytes(b"not a scan at all")
    shutil.copy(scans / "brain_b.nii.gz", scans / "spare.nii.gz")
    # the label file's object, by hand: its extent in the (D,H,W) array of a RAS file (x, y flipped)
    i, j, k = np.nonzero(gm_labels)
    ni, nj = gm_labels.shape[:2]
    gm_box = [ni - 1 - i.max(), nj - 1 - j.max(), k.min(), ni - 1 - i.min(), nj - 1 - j.min(), k.max()]
    world = _world_box(root / "c.nii.gz", [10, 15, 0, 80, 100, 1])  # the DICOM series has c.nii.gz's grid
    (root / "prompts.csv").write_text(
        "case,object,label,box,recist,labels,space\n"
        'brain_a.nii.gz,brain,,"20,20,0,75,90,1",,,\n'
        "brain_a,,,,,gm.nii.gz,\n"
        'brain_b,lesion,,,"30,40,70,60,1",,\n'
        f'brain_dicom,brain,7,"{world}",,,world\n'
        'ct_small,body,,"30,30,100,100",,,\n'
        'broken,x,,"1,2,0,5,6,1",,,\n'
        'spare,x,,"1,2,3",,,\n'
        'ghost,x,,"1,2,0,5,6,1",,,\n')
    # RECIST by hand (docs/batch.md): endpoints (30,40),(70,60) on slice 1, 1 mm voxels: L = sqrt(40² + 20²)
    # = 44.72 mm, reach 1.1 L/2 = 24.60 mm around (50, 50, 1): x, y 25.4..74.6 -> 25..75; z clipped to 0..1
    segment_args = {
        "brain_a": ["--box", "20,20,0,75,90,1", "--box", ",".join(map(str, gm_box))],
        "brain_b": ["--box", "25,25,0,75,75,1"],
        "brain_dicom": [f"--box={world}", "--world"],
        "ct_small": ["--box", "30,30,100,100"],
    }
    labels = {"brain_a": [1, 4], "brain_b": [1], "brain_dicom": [7], "ct_small": [1]}  # segment's label i -> the table's
    return {"root": root, "scans": scans, "table": root / "prompts.csv", "segment": segment_args, "labels": labels}


def _mask(path):
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), (img.GetOrigin(), img.GetSpacing(), img.GetDirection())


@pytest.fixture(scope="module")
def reference(cohort):
    """`medsamlite segment` per case, its labels 1..N renamed to the table's label values."""
    out = cohort["root"] / "segment"
    masks = {}
    for case, args in cohort["segment"].items():
        source = next(p for p in cohort["scans"].iterdir() if p.name.split(".")[0] == case)
        assert main(["segment", str(source), *args, "-q", "-o", str(out / f"{case}.nii.gz")]) == 0
        mask, grid = _mask(out / f"{case}.nii.gz")
        masks[case] = (np.array([0, *cohort["labels"][case]])[mask], grid)
    return masks


def _summary(out):
    with open(out / "summary.csv") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def _check_against(reference, out, cases=CASES):
    for case in cases:
        expected, grid = reference[case]
        mask, got_grid = _mask(out / f"{case}.nii.gz")
        np.testing.assert_array_equal(mask, expected, err_msg=case)
        np.testing.assert_allclose(np.concatenate([np.ravel(g) for g in got_grid]), np.concatenate([np.ravel(g) for g in grid]), atol=1e-6)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def _mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "summary.csv"}


def test_table_rows_and_the_recist_rule_by_hand(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('case,object,label,box,recist,space\nct1,liver,3,"1,2,3,4,5,6",,\nct1,,,,"10,20,18,20,3",\n'
                        'ct2,a,x,"1,2,3,4",,\nct3,b,,"1,2,3,4","1,2,3,4,5",\nct4,c,,,"1,2,3,4,5",world\n,d,,"1,2,3,4",,\n')
    rows, bad = read_table(csv_path)
    assert [(r.case, r.name, r.label, r.kind, r.values) for r in rows] == [
        ("ct1", "liver", 3, "box", (1, 2, 3, 4, 5, 6)), ("ct1", "", None, "recist", (10, 20, 18, 20, 3))]
    assert [(b.case, b.error) for b in bad] == [
        ("ct2", "t.csv line 4: label 'x' is not a whole number"),
        ("ct3", "t.csv line 5: give exactly one of box, recist, labels (found box, recist)"),
        ("ct4", "t.csv line 6: recist '1,2,3,4,5' has 5 numbers; expected two RAS points x0,y0,z0,x1,y1,z1"),
        ("", "t.csv line 7: no case named")]
    json_path = tmp_path / "t.json"
    json_path.write_text(json.dumps([{"case": "ct1", "object": "liver", "label": 3, "box": [1, 2, 3, 4, 5, 6]},
                                     {"case": "ct1", "recist": "10,20,18,20,3"}]))
    assert [(r.case, r.name, r.label, r.kind, r.values) for r in read_table(json_path)[0]] == [
        (r.case, r.name, r.label, r.kind, r.values) for r in rows]
    # 30 x 40 x 8 voxels of 1 x 0.5 x 2 mm: an 8 mm line from (10,20) to (18,20) on slice 3 reaches
    # 4.4 mm from (14, 20, 3): x 9.6..18.4 -> 9..19, y 20 -/+ 8.8 voxels -> 11..29, z 3 -/+ 2.2 -> 0..6
    geometry = Geometry.from_source((30, 40, 8), (1.0, 0.5, 2.0), (0, 0, 0), np.eye(3).ravel())
    assert recist_box([10, 20, 18, 20, 3], geometry).tolist() == [9, 11, 0, 19, 29, 6]
    for values, message in [([10, 20, 10, 20, 3], "coincide"), ([10, 20, 40, 20, 3], "outside the image"),
                            ([10, 20, 18, 20, 9], "outside the volume")]:
        with pytest.raises(ValueError, match=message):
            recist_box(values, geometry)


def test_an_unusable_table_or_input_is_one_line_before_any_work(tmp_path, capsys):
    (tmp_path / "scans").mkdir()
    tables = {"t.csv": "case,box,colour\nct1,\"1,2,3,4\",red\n", "t.json": "[{\"case\": \"ct1\", ", "t.xlsx": "x",
              "empty.csv": "case,box\n", "ok.csv": "case,box\nct1,\"1,2,3,4\"\n"}
    for name, text in tables.items():
        (tmp_path / name).write_text(text)
    for table, scans, message in [
        ("t.csv", "scans", "t.csv: unknown column(s) colour (columns: case, object, label, box, recist, labels, space)"),
        ("t.json", "scans", "t.json: not valid JSON"),
        ("t.xlsx", "scans", "t.xlsx: the prompt table must be .csv or .json"),
        ("empty.csv", "scans", "empty.csv: no rows in the prompt table"),
        ("nope.csv", "scans", "nope.csv: cannot read the prompt table"),
        ("ok.csv", "missing", "missing: no such folder or list file"),
    ]:
        capsys.readouterr()
        assert main(["batch", str(tmp_path / scans), "--prompts", str(tmp_path / table), "-o", str(tmp_path / "out"), "--workers", "1"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_scans_from_a_folder_or_a_list_file_and_a_case_name_two_scans_share(tmp_path):
    from MedSAMLiteLib.headless.batch import BatchSettings, find_scans, plan
    from MedSAMLiteLib.headless.executor import ModelSettings

    folder = tmp_path / "scans"
    (folder / "ct3").mkdir(parents=True)  # a DICOM series folder
    for name in ("ct1.nii.gz", "ct2.nrrd", "ct2.mha", ".hidden.nii.gz", "notes.txt"):
        (folder / name).write_bytes(b"")
    scans = find_scans(folder)
    assert sorted(scans) == ["ct1", "ct2", "ct3"]
    assert scans["ct1"] == folder / "ct1.nii.gz" and scans["ct3"] == folder / "ct3"
    (tmp_path / "list.txt").write_text("# the cohort\nscans/ct1.nii.gz\n\n" + str(folder / "ct3") + "\n")
    assert find_scans(tmp_path / "list.txt") == {"ct1": folder / "ct1.nii.gz", "ct3": folder / "ct3"}
    (tmp_path / "t.csv").write_text('case,box\nct2,"1,2,0,5,6,1"\nct1.nii.gz,"1,2,0,5,6,1"\n')
    jobs, failures = plan(scans, *read_table(tmp_path / "t.csv"), tmp_path / "out", BatchSettings(ModelSettings()))
    assert [j.case for j in jobs] == ["ct1"]
    assert failures == [{"case": "ct2", "status": "failed",
                         "error": f"{folder / 'ct2.mha'} and {folder / 'ct2.nrrd'} are both case 'ct2'; rename one"}]


def test_without_dask_one_process_is_the_default_and_more_workers_say_what_to_install(tmp_path, monkeypatch):
    from MedSAMLiteLib.headless.executor import default_workers

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the [cluster] extra were not installed
    assert default_workers(cores=16) == 1
    with pytest.raises(SystemExit, match=r"need Dask: pip install 'medsamlite\[cluster\]'"):
        main(["batch", str(tmp_path), "--prompts", str(tmp_path / "t.csv"), "-o", str(tmp_path / "out"), "--workers", "2"])
    monkeypatch.undo()
    assert default_workers(cores=16) == 4


def test_sequential_batch_equals_segment_reports_bad_input_and_resumes_without_work(cohort, reference, monkeypatch):
    out = cohort["root"] / "sequential"
    args = ["batch", str(cohort["scans"]), "--prompts", str(cohort["table"]), "-o", str(out), "-q"]
    assert main([*args, "--workers", "1"]) == 1  # some cases failed
    summary = _summary(out)
    assert {c: summary[c]["status"] for c in summary} == {**dict.fromkeys(CASES, "done"), "broken": "failed", "spare": "failed", "ghost": "failed"}
    assert "not a readable image" in summary["broken"]["error"]
    assert summary["spare"]["error"] == "prompts.csv line 8: box '1,2,3' has 3 numbers; expected x0,y0,x1,y1 (2D) or x0,y0,z0,x1,y1,z1 (3D)"
    assert summary["ghost"]["error"] == "prompts.csv line 9: no scan named 'ghost' in the input"
    assert summary["brain_a"]["objects"] == "2"
    _check_against(reference, out)
    sidecar = json.loads((out / "brain_a.json").read_text())
    assert [(o["label"], o["name"], o["prompt"]) for o in sidecar["objects"]] == [(1, "brain", "box"), (4, "label_4", "labels")]
    assert [(o["label"], o["name"]) for o in json.loads((out / "brain_dicom.json").read_text())["objects"]] == [(7, "brain")]
    # a rerun does no work on finished cases (nothing is rewritten); only the failed scan is tried again
    before = _mtimes(out)
    ran = []
    monkeypatch.setattr("MedSAMLiteLib.headless.batch.segment_one", lambda job: ran.append(job.case) or {"case": job.case, "status": "failed", "error": "x"})
    monkeypatch.setattr("MedSAMLiteLib.headless.batch.prepare_model", lambda model: None)
    assert main([*args, "--workers", "1"]) == 1
    assert ran == ["broken"]
    assert {c for c, r in _summary(out).items() if r["status"] == "skipped"} == set(CASES)
    assert _mtimes(out) == before


def _worker_processes():
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


def test_local_cluster_with_a_worker_killed_mid_run_gives_every_case_once(cohort, reference):
    """2 worker processes; when the first case is written, one worker is SIGKILLed (Dask reruns its case
    elsewhere). Every case is done once, its mask identical to `segment`'s, no temp file left."""
    out = cohort["root"] / "cluster"
    killed = []

    def kill_one_worker():
        deadline = time.time() + 300
        while time.time() < deadline and not list(out.glob("*.json")):
            time.sleep(0.05)
        workers = _worker_processes()
        if workers:
            workers[0].kill()
            killed.append(workers[0].pid)

    watcher = threading.Thread(target=kill_one_worker, daemon=True)
    watcher.start()
    assert main(["batch", str(cohort["scans"]), "--prompts", str(cohort["table"]), "-o", str(out), "-q", "--workers", "2"]) == 1
    watcher.join()
    assert killed, "no worker process found to kill"
    summary = _summary(out)
    assert [c for c in summary if summary[c]["status"] == "done"] == list(CASES)
    assert len({summary[c]["worker"] for c in CASES}) >= 2  # the work was shared out
    _check_against(reference, out)


def test_ctrl_c_stops_cleanly_and_the_next_run_writes_each_case_once(cohort, reference):
    out = cohort["root"] / "interrupted"
    args = ["batch", str(cohort["scans"]), "--prompts", str(cohort["table"]), "-o", str(out), "-q", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR)}
    proc = subprocess.Popen([sys.executable, "-m", "MedSAMLiteLib.headless.cli", *args], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*.json")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    first = _summary(out)
    finished = {c for c in CASES if first[c]["status"] == "done"}
    assert finished and finished != set(CASES)
    assert {first[c]["status"] for c in set(CASES) - finished} == {"interrupted"}
    before = {n: t for n, t in _mtimes(out).items() if n.split(".")[0] in finished}
    assert main(args) == 1
    second = _summary(out)
    assert {c: second[c]["status"] for c in CASES} == {c: "skipped" if c in finished else "done" for c in CASES}
    assert {n: t for n, t in _mtimes(out).items() if n in before} == before  # finished cases not written again
    _check_against(reference, out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_existing_cluster_through_scheduler_address(cohort, reference, tmp_path):
    """`dask scheduler` + 2 `dask worker` processes started on their own (loopback only), then --scheduler."""
    from distributed import Client

    dask = str(Path(sys.executable).parent / "dask")
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "cwd": tmp_path}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"], **quiet)]
    try:
        time.sleep(1)
        procs += [subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1",
                                    "--no-dashboard"], **quiet) for _ in range(2)]
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        out, two = cohort["root"] / "scheduler", ("brain_b", "ct_small")
        lines = cohort["table"].read_text().splitlines()
        table = tmp_path / "two.csv"
        table.write_text("\n".join([lines[0], *(ln for ln in lines if ln.startswith(two))]) + "\n")
        assert main(["batch", str(cohort["scans"]), "--prompts", str(table), "-o", str(out), "-q", "--scheduler", address]) == 0
        summary = _summary(out)
        assert {c: summary[c]["status"] for c in summary} == dict.fromkeys(two, "done")
        assert all(summary[c]["worker"].startswith("tcp://127.0.0.1:") for c in two)
        _check_against(reference, out, two)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_predict_on_the_local_cluster_equals_in_process_and_resumes(tmp_path):
    """`predict` takes the same executor: 2 challenge cases (scikit-image coins) on 2 workers give the
    same segs as in this process; a rerun skips both."""
    from MedSAMLiteLib.headless.cases import atomic_savez
    from MedSAMLiteLib.headless.samples import coins_case

    coins = coins_case()
    for name, boxes in (("2DBox_Microscopy_a.npz", coins["boxes"][:3]), ("2DBox_Microscopy_b.npz", coins["boxes"][3:5])):
        atomic_savez(tmp_path / "in" / name, imgs=coins["imgs"], boxes=boxes)
    for out, workers in (("one", "1"), ("two", "2")):
        assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / out), "-q", "--workers", workers]) == 0
    for name in ("2DBox_Microscopy_a.npz", "2DBox_Microscopy_b.npz"):
        with np.load(tmp_path / "one" / name) as a, np.load(tmp_path / "two" / name) as b:
            np.testing.assert_array_equal(a["segs"], b["segs"])
            assert a["segs"].max() == (3 if name.endswith("a.npz") else 2)
    assert len((tmp_path / "two" / "efficiency.csv").read_text().splitlines()) == 3
    before = _mtimes(tmp_path / "two")
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "two"), "-q", "--workers", "2"]) == 0
    assert _mtimes(tmp_path / "two") == before
