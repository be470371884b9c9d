"""Torch views of the core's reference helpers (`reference`: rule weights, goldens, tolerances)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import reference
import torch
from reference import NAMES, read_keys, rule_value


def rule_state_dict(name: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rule weights for every key of NAME (optionally only those under `prefix`, with it stripped)."""
    return {
        key[len(prefix) :]: torch.from_numpy(rule_value(key, shape))
        for key, shape, _ in read_keys(name)
        if key.startswith(prefix)
    }


def write_rule_checkpoints(folder: Path) -> dict[str, Path]:
    """Rule weights of every model as plain .pth files (loaded back through the public loader)."""
    paths = {}
    for name in NAMES:
        paths[name] = Path(folder) / f"{name}.pth"
        torch.save(rule_state_dict(name), paths[name])
    return paths


def reference_input(size: int) -> torch.Tensor:
    return torch.from_numpy(reference.reference_input(size))


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_close_big(actual: torch.Tensor | np.ndarray, expected: np.ndarray, what: str) -> None:
    reference.assert_close_big(_numpy(actual), expected, what)


def assert_close_small(actual: torch.Tensor | np.ndarray, expected: np.ndarray, what: str, tol: float = 1e-5) -> None:
    reference.assert_close_small(_numpy(actual), expected, what, tol)


def warm_up() -> None:
    """The reference README warns the first torch.sqrt of a process may be inaccurate with 2 threads."""
    torch.sqrt(torch.rand(1000)).sum()
