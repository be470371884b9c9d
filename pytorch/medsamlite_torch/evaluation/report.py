"""Figures (matplotlib, Agg, no pyplot state) and a self-contained HTML report for `medsamlite-torch rank`.

The PNGs are written to `<out>/figures/` and also embedded in `report.html` (base64), each image
linking to its file, so the HTML can be mailed alone or browsed beside the figures.
"""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .ranking import METRIC_NAMES

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.note{color:#666;font-size:.9em}
"""


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


def box_dot_plot(table, group: str, runs: list[str], path: Path, seed: int = 0) -> Path:
    """DSC and NSD of every case of `group`, one box (plus jittered dots) per run in rank order."""
    rng = np.random.default_rng(seed)
    sub = table[table["group"] == group]
    fig = _figure(max(6.0, 1.1 * len(runs) + 2.5), 4.0)
    axes = fig.subplots(1, 2, sharey=True)
    positions = np.arange(1, len(runs) + 1)
    for ax, metric in zip(axes, ("dsc", "nsd")):
        data = [sub.loc[sub["run"] == r, metric].dropna().to_numpy(float) for r in runs]
        filled = [d if d.size else np.array([np.nan]) for d in data]
        ax.boxplot(filled, positions=positions, widths=0.6, showfliers=False,
                   medianprops={"color": "black"}, boxprops={"color": "#555"})
        for pos, d in zip(positions, data):
            ax.scatter(pos + rng.uniform(-0.18, 0.18, d.size), d, s=10, alpha=0.6, zorder=3)
        ax.set_xticks(positions, labels=runs, rotation=30, ha="right")
        ax.set_title(f"{group}: {METRIC_NAMES[metric]} (n={len(sub['case'].unique())})")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    return path


def bubble_plot(table, dim: str, runs: list[str], path: Path) -> Path | None:
    """Mean DSC against mean runtime per run for the `dim` cases; bubble area proportional to mean NSD."""
    sub = table[table["group"].str.startswith(dim)]
    stats = sub.groupby("run")[["dsc", "nsd", "time"]].mean().reindex(runs)
    stats = stats.dropna(subset=["time", "dsc"])
    if stats.empty:
        return None
    fig = _figure(7.0, 5.0)
    ax = fig.subplots()
    nsd = stats["nsd"].fillna(0).clip(lower=0)
    ax.scatter(stats["time"], stats["dsc"], s=50 + 1500 * nsd, alpha=0.45, edgecolors="black", linewidths=0.6)
    for run, row in stats.iterrows():
        ax.annotate(f"{run} (NSD {row['nsd']:.3f})", (row["time"], row["dsc"]), textcoords="offset points",
                    xytext=(8, 8), fontsize=8)
    ax.set_xlabel("mean runtime per case (s)")
    ax.set_ylabel("mean DSC")
    ax.set_title(f"{dim}: accuracy vs runtime (bubble area ~ NSD)")
    ax.grid(alpha=0.3)
    ax.margins(0.25)
    fig.savefig(path)
    return path


def rank_stability_plot(freq, summary, path: Path) -> Path:
    """Blob plot: how often each run got each rank over the bootstrap draws (area ~ frequency),
    with its rank (red cross) and the 95 % bootstrap interval."""
    runs = summary["run"].tolist()
    x = {r: i for i, r in enumerate(runs)}
    fig = _figure(max(5.0, 0.9 * len(runs) + 2.5), 4.5)
    ax = fig.subplots()
    ax.scatter([x[r] for r in freq["run"]], freq["rank"], s=30 + 900 * freq["frequency"], alpha=0.5,
               color="#3b75af", label="bootstrap frequency")
    ax.vlines(range(len(runs)), summary["bootstrap_q025"], summary["bootstrap_q975"], color="#333", lw=1,
              label="95 % interval")
    ax.scatter(range(len(runs)), summary["rank"], marker="x", color="red", s=60, zorder=3, label="rank")
    ax.set_xticks(range(len(runs)), labels=runs, rotation=30, ha="right")
    ax.set_yticks(range(1, len(runs) + 1))
    ax.set_ylim(len(runs) + 0.7, 0.3)
    ax.set_ylabel("rank")
    ax.set_title("rank stability (bootstrap)")
    ax.legend(loc="best", fontsize=8, markerscale=0.5)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    return path


def make_figures(table, board, summary, freq, out_dir: Path) -> list[tuple[str, str, Path]]:
    """All figures: (section, caption, path)."""
    fig_dir = Path(out_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    runs = board["run"].tolist()
    figures = []
    for group in sorted(table["group"].unique()):
        path = box_dot_plot(table, group, runs, fig_dir / f"box_{_safe(group)}.png")
        figures.append(("box", f"{group}: DSC and NSD per case", path))
    for dim in ("2D", "3D"):
        if table["group"].str.startswith(dim).any():
            path = bubble_plot(table, dim, runs, fig_dir / f"bubble_{dim}.png")
            if path is not None:
                figures.append(("bubble", f"{dim}: accuracy vs runtime", path))
    if summary is not None and len(freq):
        figures.append(("stability", "rank stability", rank_stability_plot(freq, summary, fig_dir / "rank_stability.png")))
    return figures


def _img(path: Path, out_dir: Path, caption: str) -> str:
    rel = path.relative_to(out_dir).as_posix()
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = html.escape(caption)
    return (f'<figure><a href="{html.escape(rel)}"><img src="data:image/png;base64,{data}" alt="{cap}"></a>'
            f"<figcaption>{cap}</figcaption></figure>")


def _table(df, digits: int = 4) -> str:
    return df.to_html(index=False, escape=True, na_rep="", float_format=lambda v: f"{v:.{digits}f}", border=0)


def write_html(out_dir: Path, board, by_group, wilcox, summary, figures, problems, meta: dict, files: list[Path]) -> Path:
    out_dir = Path(out_dir)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>MedSAMLite ranking</title>"
             f"<style>{_STYLE}</style></head><body>", "<h1>Leaderboard (rank then aggregate)</h1>"]
    parts.append("<p class='note'>" + "<br>".join(html.escape(f"{k}: {v}") for k, v in meta.items()) + "</p>")
    parts.append(_table(board))
    parts.append("<p class='note'>Per case and metric the runs are ranked (DSC, NSD descending; runtime ascending; "
                 "ties share the best rank; missing values rank last); per modality and metric the mean case ranks "
                 "are ranked; the score is the mean of those ranks and orders the leaderboard.</p>")
    if len(by_group):
        pivot = by_group.pivot_table(index="run", columns=["group", "metric"], values="rank").reindex(board["run"])
        pivot.columns = [f"{g} {METRIC_NAMES[m]}" for g, m in pivot.columns]
        parts += ["<h2>Rank per modality and metric</h2>", _table(pivot.reset_index(), 0)]
    sections = {"box": "DSC and NSD per modality", "bubble": "Accuracy vs runtime", "stability": "Rank stability"}
    for key, title in sections.items():
        figs = [f for f in figures if f[0] == key]
        if key == "bubble" and not figs:
            parts += [f"<h2>{title}</h2>", "<p class='note'>No runtime (efficiency.csv) for any run.</p>"]
        if figs:
            parts.append(f"<h2>{title}</h2>")
            parts += [_img(path, out_dir, caption) for _, caption, path in figs]
        if key == "stability" and summary is not None:
            tau = summary.attrs.get("kendall_tau_median", np.nan)
            parts.append(_table(summary))
            parts.append(f"<p class='note'>{html.escape(meta.get('bootstrap', ''))}; median Kendall tau of the draws "
                         f"with the leaderboard: {tau:.3f}.</p>")
    if len(wilcox):
        allw = wilcox[wilcox["scope"] == "all"].copy()
        allw["metric"] = allw["metric"].map(METRIC_NAMES)
        parts += ["<h2>Pairwise Wilcoxon signed-rank tests (all cases)</h2>",
                  "<p class='note'>Two-sided, paired by case; p-values Holm-adjusted per metric; "
                  "'better' is filled where the adjusted p &lt; 0.05. Per-modality tests: wilcoxon.csv.</p>",
                  _table(allw.drop(columns=["scope"]), 4)]
    parts.append("<h2>Problems</h2>")
    if problems:
        parts.append("<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul>")
    else:
        parts.append("<p class='note'>None: every case of every run was scored.</p>")
    parts.append("<h2>Tables</h2><ul>" + "".join(
        f"<li><a href='{html.escape(f.name)}'>{html.escape(f.name)}</a></li>" for f in files) + "</ul>")
    parts.append(f"<p class='note'>Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by medsamlite-torch rank.</p>")
    parts.append("</body></html>")
    path = out_dir / "report.html"
    tmp = path.with_name(".report.html.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path
