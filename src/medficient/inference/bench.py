"""`medficient bench`: what users wait for, per runtime, measured in fresh processes.

* per case and mode: wall time, encoder/decoder calls and seconds, peak RSS, and the masks'
  agreement with the reference mode (voxels differing, per-object DSC median and minimum);
* `--encoder`: the image encoder alone on a real image (median of --encoder-runs calls);
* `--cold-start N`: `medficient predict` on each 2D case alone, from process start to output written.

A mode is `official` (torch, the published order: every object alone, every slice re-encoded),
`torch` (torch, medficient's order), or a runtime with an optional precision: `openvino`,
`openvino-bf16`, `openvino-int8`, `onnxruntime`. Each (case, mode) runs in its own subprocess so
that its peak memory is its own; medians over --repeat runs.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIDELITY_FLOOR = 0.95  # a precision whose minimum per-object DSC falls below this is not recommended


def parse_mode(mode: str) -> tuple[str, str, bool]:
    """mode -> (backend, precision, official order)."""
    if mode == "official":
        return "torch", "f32", True
    if mode in ("torch", "fast"):
        return "torch", "f32", False
    backend, _, precision = mode.partition("-")
    if backend not in ("openvino", "onnxruntime") or precision not in ("", "f32", "bf16", "int8"):
        raise ValueError(f"unknown bench mode {mode!r}")
    return backend, precision or "f32", False


def _engine(mode: str, model: str, checkpoint: str | None, threads: int | None):
    backend, precision, _ = parse_mode(mode)
    from .engine import open_engine

    return open_engine(backend, model, checkpoint, precision, threads)


def _worker(job: str, target: str, mode: str, model: str, checkpoint: str | None, threads: int | None, out: str) -> None:
    t0 = time.perf_counter()
    engine = _engine(mode, model, checkpoint, threads)
    result: dict = {"mode": mode, "load_s": time.perf_counter() - t0}
    if job == "case":
        from .cases import load_case
        from .runner import segment_case

        case = load_case(target)
        t1 = time.perf_counter()
        segs = segment_case(engine, case, official=parse_mode(mode)[2])
        result.update(case=Path(target).name, wall_s=time.perf_counter() - t1, **engine.stats.as_dict())
        np.save(out + ".npy", segs)
    else:  # encoder: `target` is the number of timed calls
        image = _encoder_input(engine.profile)
        engine.encode(image)  # first call: one-off allocations and kernel selection
        times = []
        for _ in range(int(target)):
            t1 = time.perf_counter()
            engine.encode(image)
            times.append(time.perf_counter() - t1)
        result.update(encoder_median_s=statistics.median(times), encoder_runs=len(times))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out + ".json").write_text(json.dumps(result))


def _encoder_input(profile) -> np.ndarray:
    """The MNI152 middle axial slice, preprocessed for the model (a real image, not noise)."""
    from ..samples import mni152_case
    from .preprocess import preprocess

    volume = mni152_case(slice(94, 95))["imgs"]
    return preprocess(volume[0], profile)[0]


def _spawn(job: str, target: str, mode: str, args, tmp: str, tag: str) -> dict:
    out = os.path.join(tmp, tag)
    cmd = [sys.executable, "-m", "medficient.inference.bench", job, target, mode, args.model,
           args.checkpoint or "", str(args.threads or 0), out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise RuntimeError(f"{Path(target).name} ({mode}): {last}")
    result = json.loads(Path(out + ".json").read_text())
    if job == "case":
        result["_segs"] = out + ".npy"
    return result


def _agreement(segs: np.ndarray, reference: np.ndarray) -> dict:
    from ..samples import dice_per_label

    dice = dice_per_label(segs, reference) or [1.0]
    return {"voxels_differing": int((segs != reference).sum()), "dsc_median": statistics.median(dice), "dsc_min": min(dice)}


def bench_cases(cases: list[Path], modes: list[str], args, tmp: str) -> tuple[list[dict], int]:
    keys = ["wall_s", "load_s", "encoder_calls", "encoder_seconds", "decoder_calls", "decoder_seconds", "peak_rss_mb"]
    print(f"{'case':28s} {'mode':14s} {'wall s':>8s} {'load s':>7s} {'enc n':>6s} {'enc s':>8s} {'dec n':>6s} "
          f"{'dec s':>7s} {'peak MB':>8s} {'x ref':>6s} {'differ':>8s} {'DSC med':>8s} {'DSC min':>8s}")
    rows, failed = [], 0
    for case in cases:
        ref_wall = ref_segs = None
        for mode in modes:
            try:
                runs = [_spawn("case", str(case), mode, args, tmp, f"{case.stem}.{mode}.{k}") for k in range(args.repeat)]
            except RuntimeError as e:
                print(f"medficient bench: {e}", file=sys.stderr)
                failed += 1
                continue
            med = {k: statistics.median(r[k] for r in runs) for k in keys}
            segs = np.load(runs[0]["_segs"])
            if ref_segs is None:  # the first mode is the reference of the others
                ref_wall, ref_segs = med["wall_s"], segs
            agree = _agreement(segs, ref_segs)
            speedup = ref_wall / max(med["wall_s"], 1e-9)
            print(f"{case.name[:28]:28s} {mode:14s} {med['wall_s']:8.2f} {med['load_s']:7.2f} {med['encoder_calls']:6.0f} "
                  f"{med['encoder_seconds']:8.2f} {med['decoder_calls']:6.0f} {med['decoder_seconds']:7.2f} "
                  f"{med['peak_rss_mb']:8.0f} {speedup:6.1f} {agree['voxels_differing']:8d} {agree['dsc_median']:8.4f} "
                  f"{agree['dsc_min']:8.4f}")
            if parse_mode(mode)[1] != "f32" and agree["dsc_min"] < FIDELITY_FLOOR:
                print(f"{'':28s} {mode}: minimum DSC {agree['dsc_min']:.3f} < {FIDELITY_FLOOR}: not recommended")
            if parse_mode(mode)[1] == "f32" and agree["voxels_differing"]:
                print(f"{'':28s} {mode}: f32 masks differ from {modes[0]}", file=sys.stderr)
                failed += 1
            rows.append({"case": case.name, "mode": mode, **med, "speedup_vs_reference": speedup, **agree,
                         "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]})
    return rows, failed


def bench_encoder(modes: list[str], args, tmp: str) -> list[dict]:
    rows = []
    print(f"{'encoder mode':14s} {'median s':>9s} {'x ' + modes[0]:>10s}")
    base = None
    for mode in modes:
        r = _spawn("encoder", str(args.encoder_runs), mode, args, tmp, f"encoder.{mode}")
        base = base or r["encoder_median_s"]
        r["speedup"] = base / r["encoder_median_s"]
        print(f"{mode:14s} {r['encoder_median_s']:9.3f} {r['speedup']:10.1f}")
        rows.append(r)
    return rows


def bench_cold_start(case: Path, mode: str, runs: int, args, tmp: str) -> dict:
    """Process start to output written, for `medficient predict` on one case (export cached)."""
    backend, precision, _ = parse_mode(mode)
    folder = Path(tmp) / f"cold-{case.stem}"
    folder.mkdir(exist_ok=True)
    (folder / case.name).write_bytes(case.read_bytes())
    cmd = [sys.executable, "-m", "medficient.cli", "predict", "-i", str(folder), "-o", str(Path(tmp) / "cold_out"),
           "--model", args.model, "--backend", backend, "--precision", precision, "-q"]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    subprocess.run(cmd, capture_output=True, check=True)  # builds the export if needed; not timed
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    result = {"case": case.name, "mode": mode, "median_s": statistics.median(times), "runs_s": times}
    print(f"cold start, {mode}, {case.name}: median {result['median_s']:.2f} s over {runs} runs "
          f"(min {min(times):.2f}, max {max(times):.2f})")
    return result


def run_bench(args) -> int:
    from .runner import find_cases

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        parse_mode(mode)
    cases = find_cases(args.input) if args.input else []
    if args.input and not cases:
        print(f"medficient bench: no .npz cases in {args.input}", file=sys.stderr)
        return 2
    print(f"model {args.model}, threads {args.threads or os.cpu_count()}, repeat {args.repeat} (medians); "
          f"first mode ({modes[0]}) is the reference of masks and speed-ups")
    report: dict = {"model": args.model, "threads": args.threads or os.cpu_count(), "modes": modes}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.encoder:
            report["encoder"] = bench_encoder(modes, args, tmp)
        if cases:
            report["cases"], failed = bench_cases(cases, modes, args, tmp)
        if args.cold_start:
            two_d = [c for c in cases if c.name.startswith("2D")]
            if not two_d:
                print("medficient bench: --cold-start needs -i with a 2D case", file=sys.stderr)
                return 2
            report["cold_start"] = [bench_cold_start(c, args.cold_start_mode, args.cold_start, args, tmp) for c in two_d]
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    job, target, mode, model, checkpoint, threads, out = sys.argv[1:8]
    _worker(job, target, mode, model, checkpoint or None, int(threads) or None, out)
