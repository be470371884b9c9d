"""Evaluation and ranking as the challenge did it: DSC, NSD (surfel areas), runtime, leaderboards.

Independent of the models (no torch). Modules: `tables` and `surface` (surface elements, NSD),
`metrics` (one case), `evaluate` (folders, CSVs), `ranking` (rank then aggregate, Wilcoxon,
bootstrap), `report` (figures, HTML), `commands` (`medsamlite-torch evaluate`, `medsamlite-torch rank`).
"""
from .metrics import CaseScore, LabelScore, MetricError, score_case
from .surface import surface_dice

__all__ = ["CaseScore", "LabelScore", "MetricError", "score_case", "surface_dice"]
