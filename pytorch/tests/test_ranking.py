"""Rank-then-aggregate on a small synthetic table with known ranks, Wilcoxon, bootstrap, the report."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from medsamlite_torch.cli import main
from medsamlite_torch.evaluation.ranking import (
    bootstrap,
    combine_runs,
    holm,
    leaderboard,
    prepare,
    stability,
    wilcoxon_pairs,
)

NAN = np.nan
# case -> run -> (dsc, nsd, time); expected ranks worked out by hand below
SYNTHETIC = {
    "3DBox_CT_1": {"A": (0.9, 0.8, 10), "B": (0.8, 0.9, 5), "C": (0.7, NAN, 1)},
    "3DBox_CT_2": {"A": (0.9, 0.8, 10), "B": (0.9, 0.7, 5), "C": (0.5, 0.6, 1)},
    "2DBox_X_1": {"A": (0.5, 0.5, 1), "B": (0.6, 0.6, 1), "C": (0.7, 0.7, 2)},
    "2DBox_X_2": {"A": (0.5, 0.5, 1), "B": (0.6, 0.6, 1), "C": (0.7, 0.7, 2)},
}


def synthetic_runs() -> dict[str, pd.DataFrame]:
    runs = {}
    for run in "ABC":
        rows = [{"case": f"{case}.npz", "dsc": v[run][0], "nsd": v[run][1], "time": v[run][2], "status": "ok"}
                for case, v in SYNTHETIC.items()]
        runs[run] = pd.DataFrame(rows)
    return runs


def test_rank_then_aggregate_known_ranks():
    ri = prepare(combine_runs(synthetic_runs()))
    assert ri.metrics == ["dsc", "nsd", "time"]
    board, by_group = leaderboard(ri)
    rank = by_group.set_index(["group", "metric", "run"])["rank"]
    # 3D CT dsc: case ranks A(1,1) B(2,1) C(3,3) -> means 1, 1.5, 3
    assert [rank["3D CT", "dsc", r] for r in "ABC"] == [1, 2, 3]
    # 3D CT nsd: case 1 B1 A2 C(NaN)3, case 2 A1 B2 C3 -> A and B tie on 1.5
    assert [rank["3D CT", "nsd", r] for r in "ABC"] == [1, 1, 3]
    assert [rank["3D CT", "time", r] for r in "ABC"] == [3, 2, 1]  # runtime ascending
    assert [rank["2D X", "dsc", r] for r in "ABC"] == [3, 2, 1]
    assert [rank["2D X", "time", r] for r in "ABC"] == [1, 1, 3]  # tie shares the best rank
    # scores: A (1+1+3+3+3+1)/6 = 2, B (2+1+2+2+2+1)/6 = 5/3, C (3+3+1+1+1+3)/6 = 2
    scores = board.set_index("run")["score"]
    assert scores["A"] == pytest.approx(2.0) and scores["B"] == pytest.approx(5 / 3) and scores["C"] == pytest.approx(2.0)
    assert board["run"].tolist() == ["B", "A", "C"] and board["rank"].tolist() == [1, 2, 2]
    mean_rank = by_group.set_index(["group", "metric", "run"])["mean_case_rank"]
    assert mean_rank["3D CT", "dsc", "B"] == 1.5


def test_runtime_left_out_when_no_run_has_one():
    runs = {k: v.drop(columns=["time"]) for k, v in synthetic_runs().items()}
    assert prepare(combine_runs(runs)).metrics == ["dsc", "nsd"]


def test_case_absent_from_a_run_ranks_last():
    runs = synthetic_runs()
    runs["A"] = runs["A"][runs["A"]["case"] != "2DBox_X_1.npz"]
    table = combine_runs(runs)
    assert table.set_index(["run", "case"]).loc[("A", "2DBox_X_1"), "status"] == "absent"
    ri = prepare(table)
    k, a, c = ri.metrics.index("time"), ri.runs.index("A"), ri.cases.index("2DBox_X_1")
    assert ri.case_ranks[c, k, a] == 3


def test_bootstrap_is_seeded_and_stable_for_a_clear_winner():
    ri = prepare(combine_runs(synthetic_runs()))
    b1, b2 = bootstrap(ri, 1000, seed=3), bootstrap(ri, 1000, seed=3)
    assert b1.shape == (1000, 3) and np.array_equal(b1, b2)
    assert not np.array_equal(b1, bootstrap(ri, 1000, seed=4))

    rng = np.random.default_rng(0)
    cases = [f"3DBox_CT_{i}.npz" for i in range(12)]
    base = rng.uniform(0.5, 0.8, len(cases))
    runs = {name: pd.DataFrame({"case": cases, "dsc": base + shift, "nsd": base + shift, "time": 5.0 - shift})
            for name, shift in (("best", 0.15), ("mid", 0.05), ("worst", 0.0))}
    ri = prepare(combine_runs(runs))
    summary, freq = stability(ri, bootstrap(ri, 1000, seed=0))
    assert summary["run"].tolist() == ["best", "mid", "worst"]
    assert summary["same_rank"].tolist() == [1.0, 1.0, 1.0]
    assert summary.attrs["kendall_tau_median"] == pytest.approx(1.0)
    assert freq.groupby("run")["frequency"].sum().tolist() == [1.0, 1.0, 1.0]


def test_kendall_tau_b_equals_scipy():
    from scipy.stats import kendalltau

    from medsamlite_torch.evaluation.ranking import kendall_tau_b

    rng = np.random.default_rng(0)
    x = np.array([1, 2, 2, 4, 5])
    ys = rng.integers(1, 6, size=(20, 5))
    expected = [kendalltau(x, y).statistic for y in ys]
    np.testing.assert_allclose(kendall_tau_b(x, ys), expected, equal_nan=True)


def test_signed_rank_with_ties_equals_scipy():
    from scipy.stats import wilcoxon

    from medsamlite_torch.evaluation.ranking import wilcoxon_test

    rng = np.random.default_rng(1)
    for n in (3, 6, 8):
        x, y = np.round(rng.random(n), 1), np.round(rng.random(n), 1)  # ties and zeros likely
        x[0] = y[0]
        assert wilcoxon_test(x, y) == pytest.approx((wilcoxon(x, y).statistic, wilcoxon(x, y).pvalue))
    assert wilcoxon_test(np.ones(4), np.ones(4))[1] == 1.0


def test_holm_by_hand():
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    assert np.isnan(holm(np.array([np.nan, 0.5]))[0])


def test_wilcoxon_pairs():
    cases = [f"2DBox_X_{i}.npz" for i in range(10)]
    base = np.linspace(0.5, 0.9, 10)
    step = np.arange(1, 11) / 100  # distinct differences: the exact test (ties would make scipy permute)
    runs = {"good": pd.DataFrame({"case": cases, "dsc": base + step, "nsd": base, "time": 1.0}),
            "bad": pd.DataFrame({"case": cases, "dsc": base, "nsd": base, "time": 1.0 + step})}
    ri = prepare(combine_runs(runs))
    w = wilcoxon_pairs(ri, order=["good", "bad"]).set_index(["scope", "metric"])
    dsc = w.loc[("all", "dsc")]
    assert dsc["n"] == 10 and dsc["p_value"] == pytest.approx(2 / 2**10)  # exact: all 10 differences positive
    assert dsc["better"] == "good"
    assert w.loc[("all", "nsd"), "p_value"] == 1.0 and w.loc[("all", "nsd"), "better"] == ""  # identical
    assert w.loc[("all", "time"), "better"] == "good"  # faster
    assert ("2D X", "dsc") in w.index


def _write_runs(tmp_path):
    paths = []
    for name, df in synthetic_runs().items():
        path = tmp_path / f"{name}.csv"
        df.to_csv(path, index=False)
        paths.append(f"{name}={path}")
    return paths


def test_rank_command_writes_tables_and_report(tmp_path, capsys):
    out = tmp_path / "report"
    args = ["rank", "--out", str(out), "--bootstrap", "200", "--seed", "1", "--no-progress"]
    for spec in _write_runs(tmp_path):
        args += ["--run", spec]
    assert main(args) == 0
    assert re.search(r"^\s*1\s+B\s", capsys.readouterr().out, re.M)
    for name in ("leaderboard", "ranks_by_modality", "case_metrics", "wilcoxon", "bootstrap_summary", "bootstrap_frequencies"):
        assert (out / f"{name}.csv").is_file()
    assert pd.read_csv(out / "leaderboard.csv")["run"].tolist() == ["B", "A", "C"]
    figures = sorted((out / "figures").glob("*.png"))
    names = {f.name for f in figures}
    assert {"box_2D_X.png", "box_3D_CT.png", "bubble_2D.png", "bubble_3D.png", "rank_stability.png"} <= names
    html = (out / "report.html").read_text()
    for f in figures:
        assert f.stat().st_size > 1000 and f'href="figures/{f.name}"' in html
    assert html.count("data:image/png;base64,") == len(figures)  # self-contained
    assert "leaderboard.csv" in html and "Wilcoxon" in html


def test_rank_command_with_prediction_folders(tmp_path, capsys):
    gt, a, b = tmp_path / "gt", tmp_path / "a", tmp_path / "b"
    for d in (gt, a, b):
        d.mkdir()
    lab = np.zeros((24, 24), np.uint8)
    lab[4:12, 4:12] = 1
    lab[14:20, 10:22] = 2
    for i in range(3):
        np.savez_compressed(gt / f"2DBox_X_{i}.npz", gts=lab)
        np.savez_compressed(a / f"2DBox_X_{i}.npz", segs=lab)
        np.savez_compressed(b / f"2DBox_X_{i}.npz", segs=np.roll(lab, 1 + i, axis=1))
    (a / "efficiency.csv").write_text("case,time\n" + "".join(f"2DBox_X_{i}.npz,2\n" for i in range(3)))
    (b / "2DBox_X_2.npz").unlink()
    rc = main(["rank", "--run", f"a={a}", "--run", f"b={b}", "--gt", str(gt), "--out", str(tmp_path / "r"),
               "--bootstrap", "50", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "b: 2DBox_X_2.npz: missing_prediction" in err and "runtime ranks last" in err
    board = pd.read_csv(tmp_path / "r" / "leaderboard.csv")
    assert board["run"].tolist() == ["a", "b"] and board["rank"].tolist() == [1, 2]
    assert "missing_prediction" in (tmp_path / "r" / "report.html").read_text()


def test_rank_command_bad_arguments(tmp_path, capsys):
    assert main(["rank", "--run", "nameonly", "--out", str(tmp_path)]) == 2
    assert main(["rank", "--run", f"a={tmp_path}", "--out", str(tmp_path / "o")]) == 2  # folder without --gt
    assert "--gt is needed" in capsys.readouterr().err
