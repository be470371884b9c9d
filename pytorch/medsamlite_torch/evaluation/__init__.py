"""Evaluation and ranking as the challenge did it: DSC, NSD (surfel areas), runtime, leaderboards.

Independent of the models (no torch). NSD itself (surface elements, surfel tables) is the extension's
`MedSAMLiteLib.headless.surface`, which `medsamlite evaluate-corrections` uses too. Modules: `metrics` (one case), `evaluate` (folders, CSVs), `ranking` (rank then aggregate, Wilcoxon,
bootstrap), `report` (figures, HTML), `commands` (`medsamlite-torch evaluate`, `medsamlite-torch rank`).
"""
from MedSAMLiteLib.headless.surface import surface_dice

from .metrics import CaseScore, LabelScore, MetricError, score_case

__all__ = ["CaseScore", "LabelScore", "MetricError", "score_case", "surface_dice"]
