"""`medsamlite-torch evaluate` and `medsamlite-torch rank` (heavy imports happen inside the commands)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .metrics import NSD_MODES, TOLERANCE


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="cases evaluated in parallel processes (default: min(4, CPUs))")
    p.add_argument("--nsd-mode", choices=list(NSD_MODES), default="challenge",
                   help="; ".join(f"{k}: {v}" for k, v in NSD_MODES.items()) + " (default: challenge)")
    p.add_argument("--tolerance", type=_positive_float, default=TOLERANCE, help="NSD tolerance in spacing units (default: 2.0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="DSC and NSD per case, as the challenge computed them",
        description="Score predictions (<case>.npz with 'segs') against ground truths (<case>.npz with 'gts', "
                    "and 'spacing' for 3D). Writes CSV (case,dsc,nsd[,time],status, as the official script plus "
                    "columns), CSV_labels.csv (per label) and CSV_modality.csv (per modality). Exit status 1 when a "
                    "case could not be scored or its prediction is missing.")
    p.add_argument("--pred", required=True, help="folder of predictions")
    p.add_argument("--gt", required=True, help="folder of ground truths (defines the cases)")
    p.add_argument("--csv", default=None, help="output CSV (default: PRED/metrics.csv)")
    p.add_argument("--efficiency", default=None, help="efficiency.csv (case,time) to join runtimes from")
    _common(p)
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser(
        "rank", help="challenge-style leaderboard of several runs, with statistics and an HTML report",
        description="Rank-then-aggregate over modality x {DSC, NSD, runtime}, pairwise Wilcoxon signed-rank tests and "
                    "bootstrap rank stability. A run is NAME=FOLDER of predictions (evaluated against --gt; runtime "
                    "from FOLDER/efficiency.csv) or NAME=CSV written by `medsamlite-torch evaluate`.")
    p.add_argument("--run", action="append", required=True, metavar="NAME=PATH", help="a run (repeat for each)")
    p.add_argument("--gt", default=None, help="folder of ground truths (needed for runs given as folders)")
    p.add_argument("--out", default="rank_report", help="output folder (default: rank_report)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws for rank stability (0: none; default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    _common(p)
    p.set_defaults(func=run_rank)


def _err(command: str, message: str) -> None:
    print(f"medsamlite-torch {command}: {message}", file=sys.stderr)


def _report_rows(command: str, rows: list[dict], prefix: str = "") -> list[str]:
    """One line per case with a problem (stderr) or a note; returns the problem lines."""
    from .evaluate import EMPTY_PREDICTION, PROBLEMS

    problems = []
    for r in rows:
        if r["status"] in PROBLEMS:
            line = f"{prefix}{r['case']}: {r['status']}: {r['message']}"
            problems.append(line)
            _err(command, line)
        elif r["status"] == EMPTY_PREDICTION:
            _err(command, f"note: {prefix}{r['case']}: {r['message']}")
    return problems


def run_evaluate(args) -> int:
    from .evaluate import (
        case_stem,
        evaluate_dir,
        list_cases,
        read_efficiency,
        write_outputs,
    )

    pred, gt = Path(args.pred), Path(args.gt)
    for what, folder in (("--gt", gt), ("--pred", pred)):
        if not folder.is_dir():
            _err("evaluate", f"{what} {folder} is not a folder")
            return 2
    names = list_cases(gt)
    if not names:
        _err("evaluate", f"no .npz files in {gt}")
        return 2
    times = None
    if args.efficiency:
        try:
            times = read_efficiency(args.efficiency)
        except (OSError, ValueError) as e:
            _err("evaluate", f"cannot read --efficiency: {e}")
            return 2
    rows = evaluate_dir(pred, gt, args.workers, args.nsd_mode, args.tolerance,
                        progress=False if args.no_progress else None)
    problems = _report_rows("evaluate", rows)
    extra = sorted(set(list_cases(pred)) - set(names))
    if extra:
        _err("evaluate", f"note: {len(extra)} prediction file(s) without ground truth ignored (e.g. {extra[0]})")
    if times is not None:
        untimed = [r["case"] for r in rows if case_stem(r["case"]) not in times]
        if untimed:
            _err("evaluate", f"note: {len(untimed)} case(s) have no time in {args.efficiency} (e.g. {untimed[0]})")
    paths = write_outputs(rows, args.csv or pred / "metrics.csv", times)
    _print_summary(rows)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if problems:
        _err("evaluate", f"{len(problems)} of {len(rows)} case(s) had problems (listed above)")
    return 1 if problems else 0


def _print_summary(rows: list[dict]) -> None:
    import numpy as np

    for dim in ("2D", "3D"):
        sel = [r for r in rows if r["dim"] == dim]
        if not sel:
            continue
        parts = []
        for metric in ("dsc", "nsd"):
            v = np.array([r[metric] for r in sel], float)
            v = v[~np.isnan(v)]
            parts.append(f"mean {metric.upper()} " + (f"{v.mean():.4f}" if v.size else "n/a"))
        print(f"{dim}: {len(sel)} case(s), " + ", ".join(parts))


def _load_run(name: str, path: Path, args, problems: list[str]):
    """Per-case table of one run (evaluated from a folder, or read from an evaluate CSV)."""
    import pandas as pd

    from .evaluate import (
        PROBLEMS,
        case_kind,
        case_modality,
        case_table,
        evaluate_dir,
        read_efficiency,
    )

    if path.is_dir():
        if not args.gt:
            raise ValueError(f"run {name}: --gt is needed to evaluate a folder")
        rows = evaluate_dir(path, args.gt, args.workers, args.nsd_mode, args.tolerance,
                            progress=False if args.no_progress else None, desc=name)
        problems += _report_rows("rank", rows, prefix=f"{name}: ")
        eff = path / "efficiency.csv"
        times = read_efficiency(eff) if eff.is_file() else None
        if times is None:
            _err("rank", f"note: run {name}: no {eff}: its runtime ranks last")
        return case_table(rows, times if times is not None else {})
    if path.is_file():
        df = pd.read_csv(path)
        missing = {"case", "dsc", "nsd"} - set(df.columns)
        if missing:
            raise ValueError(f"run {name}: {path} lacks column(s) {', '.join(sorted(missing))}")
        df["dim"] = [case_kind(str(c)) or "" for c in df["case"]]
        df["modality"] = [case_modality(str(c)) for c in df["case"]]
        if "status" in df.columns:
            for case, status in zip(df["case"], df["status"]):
                if status in PROBLEMS:
                    problems.append(f"{name}: {case}: {status} (from {path.name})")
                    _err("rank", problems[-1])
        return df
    raise ValueError(f"run {name}: {path} is neither a folder nor a CSV file")


def run_rank(args) -> int:
    from .evaluate import write_csv_atomic
    from .ranking import (
        bootstrap,
        combine_runs,
        leaderboard,
        prepare,
        stability,
        wilcoxon_pairs,
    )
    from .report import make_figures, write_html

    runs: dict[str, Path] = {}
    for spec in args.run:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            _err("rank", f"--run {spec!r}: expected NAME=PATH")
            return 2
        if name in runs:
            _err("rank", f"--run: name {name!r} given twice")
            return 2
        runs[name] = Path(path)
    if args.bootstrap < 0:
        _err("rank", "--bootstrap must be >= 0")
        return 2
    problems: list[str] = []
    try:
        tables = {name: _load_run(name, path, args, problems) for name, path in runs.items()}
    except (OSError, ValueError) as e:
        _err("rank", str(e))
        return 2
    table = combine_runs(tables)
    if table.empty:
        _err("rank", "no cases to rank")
        return 2
    ri = prepare(table)
    board, by_group = leaderboard(ri)
    summary = freq = None
    if args.bootstrap > 0:
        summary, freq = stability(ri, bootstrap(ri, args.bootstrap, args.seed))
    wilcox = wilcoxon_pairs(ri, order=board["run"].tolist())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv_atomic(board, out / "leaderboard.csv", "%.4f"),
             write_csv_atomic(by_group, out / "ranks_by_modality.csv", "%.4f"),
             write_csv_atomic(table, out / "case_metrics.csv", "%.4f"),
             write_csv_atomic(wilcox, out / "wilcoxon.csv", "%.6g")]
    if summary is not None:
        files += [write_csv_atomic(summary, out / "bootstrap_summary.csv", "%.4f"),
                  write_csv_atomic(freq, out / "bootstrap_frequencies.csv", "%.4f")]
    figures = make_figures(table, board, summary, freq, out)
    meta = {"runs": ", ".join(f"{n} = {p}" for n, p in runs.items()),
            "ground truth": args.gt or "(from the CSVs)",
            "cases": f"{len(ri.cases)} in {len(set(ri.groups))} modality group(s)",
            "metrics": ", ".join(ri.metrics),
            "NSD": f"mode {args.nsd_mode}, tolerance {args.tolerance}",
            "bootstrap": f"{args.bootstrap} draws, seed {args.seed}" if args.bootstrap else "none"}
    report = write_html(out, board, by_group, wilcox, summary, figures, problems, meta, files)
    with_cols = ["rank", "run", "score"] + [c for c in board.columns if c.startswith("mean ")]
    print(board[with_cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {report} and {len(files)} CSV table(s), {len(figures)} figure(s) in {out}")
    return 1 if problems else 0
