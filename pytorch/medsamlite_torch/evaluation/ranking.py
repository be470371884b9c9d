"""Rank-then-aggregate leaderboard, pairwise Wilcoxon tests and bootstrap rank stability.

As the challenge paper describes it (after challengeR's rank-then-aggregate):
1. per case and metric, rank the runs: DSC and NSD descending, runtime ascending; ties share the
   best rank ("min"); a missing value (a case that could not be scored, no runtime) ranks last;
2. per modality group ("3D MR", "2D Microscopy", ...) and metric, average each run's case ranks and
   rank those means (again "min" for ties);
3. average each run's ranks over all (group, metric) pairs: the score; the final rank orders the
   scores (lowest first).
Bootstrap: cases are drawn with replacement within each group (N times, seeded) and steps 2-3
repeated; case ranks do not change under resampling, so each draw is a weighted mean.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations

import numpy as np

HIGHER_IS_BETTER = {"dsc": True, "nsd": True, "time": False}
METRIC_NAMES = {"dsc": "DSC", "nsd": "NSD", "time": "runtime"}
DECIMALS = 4  # DSC and NSD are compared as the official CSV stores them


def group_name(dim: str, modality: str) -> str:
    return f"{dim} {modality}".strip()


def combine_runs(runs: dict):
    """Long table (run, case, group, dsc, nsd, time, status) over the union of all runs' cases.

    `runs` maps a run name to its per-case table (case, dsc, nsd, [time], status, dim, modality). A
    case one run lacks gets NaN values and status `absent`.
    """
    import pandas as pd

    from .evaluate import case_kind, case_modality, case_stem

    frames = []
    for name, df in runs.items():
        df = df.copy()
        df["case"] = [case_stem(str(c)) for c in df["case"]]
        for col in ("time", "status"):
            if col not in df.columns:
                df[col] = np.nan if col == "time" else "ok"
        frames.append(df.assign(run=name)[["run", "case", "dsc", "nsd", "time", "status"]])
    table = pd.concat(frames, ignore_index=True)
    full = pd.MultiIndex.from_product([list(runs), sorted(table["case"].unique())], names=["run", "case"])
    table = table.drop_duplicates(["run", "case"], keep="last").set_index(["run", "case"]).reindex(full).reset_index()
    table["status"] = table["status"].fillna("absent")
    dims = [case_kind(c) or "" for c in table["case"]]
    table["group"] = [group_name(d, case_modality(c)) for d, c in zip(dims, table["case"])]
    for col in ("dsc", "nsd", "time"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    # ranked at the 4 decimals of the challenge's CSV: evaluated folders and CSV runs compare alike
    table[["dsc", "nsd"]] = table[["dsc", "nsd"]].round(DECIMALS)
    return table[["run", "case", "group", "dsc", "nsd", "time", "status"]]


def metrics_for(table) -> list[str]:
    """DSC and NSD, plus runtime when any run has one."""
    return ["dsc", "nsd"] + (["time"] if table["time"].notna().any() else [])


@dataclass
class RankInput:
    runs: list[str]
    cases: list[str]
    groups: list[str]  # group of each case
    metrics: list[str]
    values: np.ndarray  # (cases, metrics, runs)
    case_ranks: np.ndarray  # (cases, metrics, runs), 1 = best

    def group_index(self) -> dict[str, np.ndarray]:
        names = sorted(set(self.groups))
        g = np.asarray(self.groups)
        return {name: np.flatnonzero(g == name) for name in names}


def _rank_min(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Ranks along `axis`, lowest value first, ties share the lowest rank; NaN ranks last."""
    from scipy.stats import rankdata

    return rankdata(np.where(np.isnan(x), np.inf, x), method="min", axis=axis)


def prepare(table, runs: list[str] | None = None, metrics: list[str] | None = None) -> RankInput:
    runs = list(dict.fromkeys(table["run"])) if runs is None else runs
    metrics = metrics_for(table) if metrics is None else metrics
    cases = sorted(table["case"].unique())
    wide = table.set_index(["case", "run"])
    values = np.stack([wide[m].unstack("run").reindex(index=cases, columns=runs).to_numpy(float) for m in metrics], axis=1)
    groups = table.drop_duplicates("case").set_index("case")["group"].reindex(cases).tolist()
    signed = np.where(np.array([HIGHER_IS_BETTER[m] for m in metrics])[None, :, None], -values, values)
    return RankInput(runs, cases, groups, metrics, values, _rank_min(signed, axis=-1).astype(float))


def _aggregate(ri: RankInput, weights: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Final ranks and scores; per group: rank sums (weighted draws for the bootstrap) and ranks.

    With `weights[g]` of shape (B, n_g) every draw is aggregated at once: results gain a leading B axis.
    """
    score = 0.0
    per_group = {}
    index = ri.group_index()
    for g, idx in index.items():
        r = ri.case_ranks[idx]  # (n_g, K, A)
        if weights is None:
            sums = r.sum(axis=0)  # integer-valued: ties stay exact
        else:
            sums = np.einsum("bn,nka->bka", weights[g], r)
        ranks = _rank_min(sums, axis=-1)
        per_group[g] = (sums / len(idx), ranks)
        score = score + ranks.sum(axis=-2)  # over metrics
    n_pairs = len(index) * len(ri.metrics)
    score = score / n_pairs
    return _rank_min(score, axis=-1), score, per_group


def leaderboard(ri: RankInput):
    """(leaderboard, by_group): final rank and score per run; mean case rank and rank per group/metric."""
    import pandas as pd

    final, score, per_group = _aggregate(ri)
    board = pd.DataFrame({"rank": final.astype(int), "run": ri.runs, "score": score})
    records = []
    index = ri.group_index()
    for g, (mean_rank, ranks) in per_group.items():
        for k, m in enumerate(ri.metrics):
            v = ri.values[index[g], k]
            board[f"{g} {m}"] = ranks[k].astype(int)
            for a, run in enumerate(ri.runs):
                records.append({"group": g, "metric": m, "run": run, "rank": int(ranks[k, a]),
                                "mean_case_rank": mean_rank[k, a], "cases": len(index[g]),
                                "mean": np.nanmean(v[:, a]) if np.any(~np.isnan(v[:, a])) else np.nan,
                                "median": np.nanmedian(v[:, a]) if np.any(~np.isnan(v[:, a])) else np.nan,
                                "missing": int(np.isnan(v[:, a]).sum())})
    for k, m in enumerate(ri.metrics):
        v = ri.values[:, k]
        board[f"mean {m}"] = [np.nanmean(v[:, a]) if np.any(~np.isnan(v[:, a])) else np.nan for a in range(len(ri.runs))]
    board = board.sort_values(["rank", "run"], kind="stable").reset_index(drop=True)
    return board, pd.DataFrame(records)


def bootstrap(ri: RankInput, n: int = 1000, seed: int = 0) -> np.ndarray:
    """(n, runs) final ranks of `n` bootstrap draws (cases resampled within each group)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for g, idx in ri.group_index().items():
        weights[g] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=n).astype(float)
    final, _, _ = _aggregate(ri, weights)
    return final.astype(int)


def stability(ri: RankInput, boot: np.ndarray):
    """(summary, frequencies): per run its rank, bootstrap median and 95 % interval, share of draws
    with the same rank, median Kendall tau of the draws with the original ranking."""
    import pandas as pd

    final, _, _ = _aggregate(ri)
    taus = kendall_tau_b(final, boot)
    taus[np.isnan(taus) & np.all(boot == final[None, :], axis=1)] = 1.0
    summary = pd.DataFrame({
        "run": ri.runs,
        "rank": final.astype(int),
        "bootstrap_median": np.median(boot, axis=0),
        "bootstrap_q025": np.quantile(boot, 0.025, axis=0),
        "bootstrap_q975": np.quantile(boot, 0.975, axis=0),
        "same_rank": (boot == final[None, :]).mean(axis=0),
    }).sort_values(["rank", "run"], kind="stable").reset_index(drop=True)
    summary.attrs["kendall_tau_median"] = float(np.nanmedian(taus)) if len(taus) else np.nan
    freq = [{"run": run, "rank": int(r), "frequency": float(np.mean(boot[:, a] == r))}
            for a, run in enumerate(ri.runs) for r in range(1, len(ri.runs) + 1) if np.any(boot[:, a] == r)]
    return summary, pd.DataFrame(freq, columns=["run", "rank", "frequency"])


def kendall_tau_b(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between ranking `x` (n,) and each row of `ys` (B, n); NaN where undefined."""
    i, j = np.triu_indices(x.size, 1)
    sx = np.sign(x[i] - x[j])
    sy = np.sign(ys[:, i] - ys[:, j])
    denom = np.sqrt(float(np.count_nonzero(sx)) * np.count_nonzero(sy, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (sy * sx).sum(axis=1) / np.where(denom > 0, denom, 1), np.nan)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN kept)."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def _signed_rank_exact(d: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test by its exact (conditional) null distribution, ties and
    zeros included ("wilcox": zeros dropped): the statistic min(R+, R-) and the p-value. SciPy's
    `wilcoxon` gives the same p-value but enumerates all 2^n sign patterns for n <= 13 when there
    are ties or zeros (seconds per test); a convolution over the doubled mid-ranks is immediate."""
    from scipy.stats import rankdata

    d = d[d != 0]
    n = d.size
    if n == 0:
        return np.nan, 1.0
    twice = np.rint(2 * rankdata(np.abs(d))).astype(np.int64)
    counts = np.zeros(int(twice.sum()) + 1)
    counts[0] = 1.0
    for r in twice:
        counts[r:] += counts[:-r].copy()  # r >= 2: doubled ranks
    prob = counts / counts.sum()
    t = int(twice[d > 0].sum())
    p = min(1.0, 2 * min(prob[: t + 1].sum(), prob[t:].sum()))
    r_plus = t / 2
    return float(min(r_plus, twice.sum() / 2 - r_plus)), float(p)


def wilcoxon_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(statistic, two-sided p) of the paired Wilcoxon signed-rank test (SciPy's `method="auto"`)."""
    from scipy.stats import wilcoxon

    d = x - y
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return np.nan, 1.0
    if nonzero.size <= 13 and (nonzero.size < d.size or np.unique(np.abs(nonzero)).size < nonzero.size):
        return _signed_rank_exact(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = wilcoxon(x, y)
    return float(res.statistic), float(res.pvalue)


def wilcoxon_pairs(ri: RankInput, order: list[str] | None = None, alpha: float = 0.05):
    """Paired two-sided Wilcoxon signed-rank tests for every pair of runs, per metric, over all cases
    ("all") and within each group; Holm adjustment within each (scope, metric)."""
    import pandas as pd

    order = order or ri.runs
    pos = {r: i for i, r in enumerate(ri.runs)}
    scopes = {"all": np.arange(len(ri.cases)), **ri.group_index()}
    records = []
    for scope, idx in scopes.items():
        for k, m in enumerate(ri.metrics):
            family = []
            for a, b in combinations(order, 2):
                x, y = ri.values[idx, k, pos[a]], ri.values[idx, k, pos[b]]
                keep = ~(np.isnan(x) | np.isnan(y))
                x, y = x[keep], y[keep]
                d = x - y
                rec = {"scope": scope, "metric": m, "run_a": a, "run_b": b, "n": int(d.size),
                       "median_a": np.median(x) if d.size else np.nan, "median_b": np.median(y) if d.size else np.nan,
                       "median_diff": np.median(d) if d.size else np.nan, "statistic": np.nan, "p_value": np.nan}
                if d.size:
                    rec["statistic"], rec["p_value"] = wilcoxon_test(x, y)
                family.append(rec)
            for rec, p in zip(family, holm([r["p_value"] for r in family])):
                rec["p_holm"] = p
                rec["better"] = ""
                if p < alpha:
                    diff = rec["median_diff"] if rec["median_diff"] != 0 else np.nanmean(
                        ri.values[idx, k, pos[rec["run_a"]]] - ri.values[idx, k, pos[rec["run_b"]]])
                    a_better = diff > 0 if HIGHER_IS_BETTER[m] else diff < 0
                    rec["better"] = rec["run_a"] if a_better else rec["run_b"]
            records.extend(family)
    return pd.DataFrame(records, columns=["scope", "metric", "run_a", "run_b", "n", "median_a", "median_b",
                                          "median_diff", "statistic", "p_value", "p_holm", "better"])
