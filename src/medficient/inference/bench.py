"""`medficient bench`: per-case time, encoder/decoder calls and time, peak memory; fast vs official order.

Each (case, mode) runs in a fresh subprocess so that its peak RSS is its own and the model
load is timed apart from inference. Medians over --repeat runs; masks of both modes compared.
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


def _worker(case_path: str, mode: str, model: str, checkpoint: str | None, threads: int | None, out: str) -> None:
    t0 = time.perf_counter()
    import torch

    if threads:
        torch.set_num_threads(threads)
    from .cases import load_case
    from .engine import TorchEngine
    from .runner import segment_case

    engine = TorchEngine.load(model, checkpoint)
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    case = load_case(case_path)
    segs = segment_case(engine, case, official=(mode == "official"))
    wall = time.perf_counter() - t1
    np.save(out + ".npy", segs)
    result = {
        "case": Path(case_path).name,
        "mode": mode,
        "wall_s": wall,
        "startup_and_load_s": t_load,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **engine.stats.as_dict(),
    }
    Path(out + ".json").write_text(json.dumps(result))


def _run_one(case: Path, mode: str, args, tmp: str, k: int) -> dict:
    out = os.path.join(tmp, f"{case.stem}.{mode}.{k}")
    cmd = [sys.executable, "-m", "medficient.inference.bench", str(case), mode, args.model, args.checkpoint or "", str(args.threads or 0), out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{case.name} ({mode}): {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    result = json.loads(Path(out + ".json").read_text())
    result["_segs"] = out + ".npy"
    return result


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def run_bench(args) -> int:
    from .runner import find_cases

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    cases = find_cases(args.input)
    if not cases:
        print(f"medficient bench: no .npz cases in {args.input}", file=sys.stderr)
        return 2
    keys = ["wall_s", "encoder_calls", "encoder_seconds", "decoder_calls", "decoder_seconds", "peak_rss_mb"]
    header = f"{'case':28s} {'mode':9s} {'wall s':>8s} {'enc n':>6s} {'enc s':>8s} {'dec n':>6s} {'dec s':>8s} {'peak MB':>8s}"
    print(f"model {args.model}, threads {args.threads or os.cpu_count()}, repeat {args.repeat} (medians)")
    print(header)
    all_rows, failed = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            per_mode = {}
            for mode in modes:
                try:
                    rows = [_run_one(case, mode, args, tmp, k) for k in range(args.repeat)]
                except RuntimeError as e:
                    print(f"medficient bench: {e}", file=sys.stderr)
                    failed += 1
                    continue
                med = {k: _median(rows, k) for k in keys}
                per_mode[mode] = (med, np.load(rows[0]["_segs"]))
                print(
                    f"{case.name:28s} {mode:9s} {med['wall_s']:8.2f} {med['encoder_calls']:6.0f} {med['encoder_seconds']:8.2f} "
                    f"{med['decoder_calls']:6.0f} {med['decoder_seconds']:8.2f} {med['peak_rss_mb']:8.0f}"
                )
                all_rows += [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
            if "fast" in per_mode and "official" in per_mode:
                same = np.array_equal(per_mode["fast"][1], per_mode["official"][1])
                ratio = per_mode["official"][0]["wall_s"] / max(per_mode["fast"][0]["wall_s"], 1e-9)
                print(f"{'':28s} official/fast wall ratio {ratio:.1f}x, masks identical: {'yes' if same else 'NO'}")
                failed += 0 if same else 1
    if args.json:
        Path(args.json).write_text(json.dumps(all_rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    case_path, mode, model, checkpoint, threads, out = sys.argv[1:7]
    _worker(case_path, mode, model, checkpoint or None, int(threads) or None, out)
