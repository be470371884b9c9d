"""`make compat`: the extension on each supported Slicer's Python, without Slicer.

For each profile: a fresh virtual environment from the matching interpreter on this machine, that
Slicer's own numpy, SimpleITK (and scipy) installed first, then the panel's install
(`dependencies.pip_install_arguments()`: requirements.txt with every installed package pinned), a
check that no package installed before changed version, then the core converting the genuine
LiteMedSAM weights and segmenting a 2D and a 3D case through `medsamlite segment`, whose masks must
equal the ones this environment (the development one) makes. The `floor-*` profiles install the
oldest openvino and opencv that requirements.txt allows, on Python 3.9 and 3.12. A profile whose interpreter is missing is
skipped, saying so. Environments and results go to `.compat/` (kept between runs: pip's cache makes
a rerun faster; the environments are rebuilt every time).

    python MedSAMLite/Testing/compat.py [PROFILE ...]     # all profiles by default
    python MedSAMLite/Testing/compat.py case --out masks.npz [--expect masks.npz]   # inside one environment

The orchestration needs only the standard library; `case` needs the extension's runtime packages.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1]  # MedSAMLite/: MedSAMLite.py, MedSAMLiteLib, Resources
REPO = MODULE_DIR.parent
WORK = REPO / ".compat"
TEST_DATA = MODULE_DIR / "Resources" / "TestData"

# Slicer's Python packages, from Slicer's SuperBuild files at each release tag (docs/compat.md).
SLICER = {
    "5.6": ("3.9", {"numpy": "1.26.1", "SimpleITK": "2.2.1"}),
    "5.8": ("3.9", {"numpy": "1.26.4", "SimpleITK": "2.3.1", "scipy": "1.13.1"}),
    "5.10": ("3.12", {"numpy": "2.0.2", "SimpleITK": "2.5.2", "scipy": "1.13.1"}),
    "5.12": ("3.12", {"numpy": "2.4.6", "SimpleITK": "2.5.5", "scipy": "1.17.1"}),
}
# profile -> (Slicer whose packages it starts from, install the requirements' floors)
PROFILES = {f"slicer-{v}": (v, False) for v in SLICER} | {"floor-5.8": ("5.8", True), "floor-5.10": ("5.10", True)}

# The cases: the test volume (12 x 67 x 67, MR) with a box around its reference structure through
# slices 3-8, and that volume's slice 6 as a 2D image with the box on it (array voxels, z inclusive).
BOX_3D = "11,3,3,59,61,8"
BOX_2D = "11,3,59,61"
SLICE_2D = 6


def find_python(version: str) -> str | None:
    """An interpreter of VERSION (e.g. "3.9") that runs: the newest pyenv one, else pythonX.Y on PATH
    (a pyenv shim on PATH may exist and still refuse to run)."""
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found = [Path(c) for c in glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python"))]
    found = [c for c in found if re.fullmatch(rf"{re.escape(version)}\.\d+", c.parents[1].name)]
    found.sort(key=lambda c: int(c.parents[1].name.split(".")[2]), reverse=True)
    for candidate in [*map(str, found), shutil.which(f"python{version}")]:
        probe = [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"] if candidate else None
        if probe and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == version:
            return candidate
    return None


def run(cmd: list[str], log: Path, **kwargs) -> str:
    """Run CMD, appending its output to LOG; raise with the log's tail if it fails."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
        f.write(done.stdout)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-15:])
        raise RuntimeError(f"{Path(cmd[0]).name} {' '.join(cmd[1:4])} ... failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def in_env(python: str, code: str, log: Path) -> str:
    """Run CODE in PYTHON with the module folder importable (as Slicer does); its stdout."""
    return run([python, "-c", f"import sys\nsys.path.insert(0, {str(MODULE_DIR)!r})\n{code}"], log)


def floors() -> dict[str, str]:
    """name -> floor for every `name>=floor` line of requirements.txt."""
    lines = (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()
    return dict(line.split(">=") for line in lines if ">=" in line and not line.startswith("#"))


def same_version(a: str | None, b: str) -> bool:
    """Plain numeric versions equal as pip compares them (2025.0 == 2025.0.0)."""
    def key(v: str) -> list[int]:
        parts = [int(p) for p in v.split(".")]
        while parts and parts[-1] == 0:
            parts.pop()
        return parts

    return a is not None and key(a) == key(b)


def check_profile(name: str, expect: Path) -> dict:
    """Build and check one profile; a result row (status, versions, seconds)."""
    slicer, floor = PROFILES[name]
    version, shipped = SLICER[slicer]
    row = {"profile": name, "python": version, "slicer": slicer}
    python = find_python(version)
    if python is None:
        return {**row, "status": f"skipped: no Python {version} on this machine (PATH or pyenv)"}
    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "log.txt"
    t0 = time.perf_counter()
    run([python, "-m", "venv", str(folder / "venv")], log)
    env_python = str(folder / "venv" / "bin" / "python")
    pip = [env_python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run(pip + [f"{p}=={v}" for p, v in shipped.items()], log)  # what that Slicer ships
    before = json.loads(in_env(env_python, "import json; from MedSAMLiteLib import dependencies; "
                                           "print(json.dumps(dependencies.installed_versions()))", log))
    extra = []
    if floor:
        pins = folder / "floor-constraints.txt"
        pins.write_text("".join(f"{n}=={v}\n" for n, v in floors().items()))
        extra = ["-c", str(pins)]
    in_env(env_python, "import subprocess\nfrom MedSAMLiteLib import dependencies\n"  # the panel's install
                       "with dependencies.pip_install_arguments() as args:\n"
                       f"    subprocess.run({pip!r} + args + {extra!r}, check=True)", log)
    after = json.loads(in_env(env_python, "import json; from MedSAMLiteLib import dependencies; "
                                          "print(json.dumps(dependencies.installed_versions()))", log))
    changed = {n: (v, after.get(n)) for n, v in before.items() if after.get(n) != v}
    row.update(openvino=after.get("openvino"), opencv=after.get("opencv-python-headless"), numpy=after.get("numpy"),
               install_s=round(time.perf_counter() - t0, 1))
    if changed:
        return {**row, "status": f"FAILED: the install changed {changed}"}
    if floor and not all(same_version(after.get(n), v) for n, v in floors().items()):
        return {**row, "status": f"FAILED: not the floors {floors()}"}
    t1 = time.perf_counter()
    out = run([env_python, __file__, "case", "--home", str(folder / "home"), "--out", str(folder / "masks.npz"),
               "--expect", str(expect)], log)
    row["case_s"] = round(time.perf_counter() - t1, 1)
    row["status"] = "ok: " + out.strip().splitlines()[-1]
    return row


def orchestrate(names: list[str]) -> int:
    WORK.mkdir(exist_ok=True)
    main_log = WORK / "main-log.txt"
    main_log.write_text("")
    expect = WORK / "main-masks.npz"
    t0 = time.perf_counter()
    print(f"this environment ({sys.executable}): converting and segmenting ...", flush=True)
    out = run([sys.executable, __file__, "case", "--home", str(WORK / "main-home"), "--out", str(expect)], main_log)
    print(f"  {out.strip().splitlines()[-1]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows, failed = [], False
    for name in names:
        print(f"{name}: ...", flush=True)
        t = time.perf_counter()
        try:
            row = check_profile(name, expect)
        except Exception as e:  # one broken profile must not hide the others' results
            row = {"profile": name, "status": f"FAILED: {e}"}
        row["total_s"] = round(time.perf_counter() - t, 1)
        failed |= row["status"].startswith("FAILED")
        rows.append(row)
        print("  " + json.dumps(row), flush=True)
    (WORK / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{'profile':12} {'python':6} {'numpy':7} {'openvino':9} {'opencv':11} {'seconds':>7}  status")
    for r in rows:
        print(f"{r['profile']:12} {r.get('python', ''):6} {r.get('numpy') or '':7} {r.get('openvino') or '':9} "
              f"{r.get('opencv') or '':11} {r['total_s']:7.0f}  {r['status']}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# Inside one environment


def case(home: Path, out: Path, expect: Path | None) -> int:
    """Convert LiteMedSAM into HOME's cache, segment the 2D and 3D cases with `medsamlite segment`,
    save the masks to OUT; with EXPECT, require them equal to those."""
    sys.path.insert(0, str(MODULE_DIR))
    import numpy as np
    import SimpleITK as sitk

    from MedSAMLiteLib.models import store as model_store
    from MedSAMLiteLib.headless.cli import main as medsamlite

    weights = model_store.fetch_weights("litemedsam")  # the user's cache (verified; fetched once)
    shutil.rmtree(home, ignore_errors=True)
    os.environ["MEDSAMLITE_HOME"] = str(home)  # a cache of this environment's own: a copy of the weights
    (home / "weights" / "litemedsam").mkdir(parents=True)
    shutil.copyfile(weights, home / "weights" / "litemedsam" / weights.name)
    t0 = time.perf_counter()
    model_store.ensure_converted("litemedsam", download=False)  # as on first use
    convert_s = time.perf_counter() - t0
    masks = {}
    with tempfile.TemporaryDirectory() as tmp:
        volume = TEST_DATA / "MedSAMLiteTestVolume.nrrd"
        image_2d = Path(tmp) / "slice.nrrd"
        sitk.WriteImage(sitk.ReadImage(str(volume))[:, :, SLICE_2D], str(image_2d))
        t0 = time.perf_counter()
        for key, image, box in (("3d", volume, BOX_3D), ("2d", image_2d, BOX_2D)):
            mask = Path(tmp) / f"{key}.nrrd"
            status = medsamlite(["segment", str(image), "--box", box, "--preset", "mr", "-q", "-o", str(mask)])
            if status != 0:
                raise SystemExit(f"medsamlite segment {key} failed ({status})")
            masks[key] = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
        segment_s = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **masks)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(TEST_DATA / "MedSAMLiteTestReference.nrrd"))) > 0
    z0, z1 = (int(v) for v in BOX_3D.split(",")[2::3])
    ref = reference[z0 : z1 + 1]
    got = masks["3d"][z0 : z1 + 1] > 0
    dice = 2 * (ref & got).sum() / (ref.sum() + got.sum())
    voxels = {k: int((m > 0).sum()) for k, m in masks.items()}
    summary = f"convert {convert_s:.1f} s, segment {segment_s:.1f} s, voxels {voxels}, 3D Dice vs reference {dice:.3f}"
    if expect is not None:
        with np.load(expect) as want:
            for key, mask in masks.items():
                if mask.shape != want[key].shape or not np.array_equal(mask, want[key]):
                    print(f"masks differ from {expect} ({key}: {int((mask != want[key]).sum())} voxels)")
                    return 1
        summary += ", masks equal to the development environment's"
    print(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["case"]:
        p = argparse.ArgumentParser(prog="compat.py case")
        p.add_argument("--home", type=Path, required=True, help="MEDSAMLITE_HOME for this environment's conversions")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--expect", type=Path)
        a = p.parse_args(argv[1:])
        return case(a.home, a.out, a.expect)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profiles", nargs="*", metavar="PROFILE", help=f"default: all ({', '.join(PROFILES)})")
    a = p.parse_args(argv)
    unknown = [n for n in a.profiles if n not in PROFILES]
    if unknown:
        p.error(f"unknown profile(s) {', '.join(unknown)}; choose from {', '.join(PROFILES)}")
    return orchestrate(a.profiles or list(PROFILES))


if __name__ == "__main__":
    sys.exit(main())
