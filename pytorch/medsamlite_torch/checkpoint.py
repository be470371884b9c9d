"""Checkpoint loading: foreign layouts (Lightning, nested dicts, prefixes) mapped onto ours."""
from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

# Wrapper prefixes (Lightning's `model.` as MedficientSAM released it, DDP, torch.compile); a
# distillation checkpoint's `student_encoder.` is handled in `filter_state_dict`.
_MODEL_PREFIXES = ("model.", "module.", "_orig_mod.")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def read_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> dict:
    """Read a checkpoint file; arbitrary pickled objects only with `trust_pickle=True`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        if trust_pickle:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
        raise CheckpointError(
            f"{path}: holds pickled Python objects beyond plain tensors (e.g. Lightning hyper-parameters); "
            "load it only if you trust its source, with trust_pickle=True / --trust-checkpoint"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0]})") from e


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (or, legacy, a pickle starting with the PROTO opcode 0x80)."""
    with path.open("rb") as f:
        head = f.read(4)
    return head.startswith(b"PK") or head[:1] == b"\x80"


def extract_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside the common wrappers ({'model': ...}, {'state_dict': ...})."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, found {type(obj).__name__}")
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return extract_state_dict(inner)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("no tensors found in the checkpoint")
    return tensors


def filter_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map foreign key layouts onto the model's keys.

    Strips wrapper prefixes (`model.`, `module.`); an encoder-only distillation checkpoint
    (`student_encoder.*`, `teacher_encoder.*` dropped) becomes `image_encoder.*`.
    """
    own = set(model.state_dict())
    for prefix in _MODEL_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if any(k.startswith("student_encoder.") for k in state):
        state = {
            "image_encoder." + k[len("student_encoder.") :]: v for k, v in state.items() if k.startswith("student_encoder.")
        }
    elif state and not (set(state) & own) and any(k in own for k in ("image_encoder." + k for k in state)):
        state = {"image_encoder." + k: v for k, v in state.items()}  # bare encoder weights
    return state


def is_encoder_only(state: Mapping[str, torch.Tensor]) -> bool:
    return bool(state) and all(k.startswith("image_encoder.") for k in state)


def load_into(model: nn.Module, path: str | Path, *, trust_pickle: bool = False, strict: bool = True) -> None:
    """Load a checkpoint strictly, raising one error that lists every mismatch.

    An encoder-only checkpoint loads just the image encoder (the rest must be loaded separately).
    """
    state = filter_state_dict(extract_state_dict(read_checkpoint(path, trust_pickle=trust_pickle)), model)
    target: nn.Module = model
    if is_encoder_only(state) and hasattr(model, "image_encoder"):
        target = model.image_encoder  # type: ignore[assignment]
        state = {k[len("image_encoder.") :]: v for k, v in state.items()}
    load_state_dict_checked(target, state, strict=strict, source=str(path))


def load_state_dict_checked(module: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool = True, source: str = "") -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if wrong or (strict and (missing or unexpected)):
        raise CheckpointError(_mismatch_message(source, missing, unexpected, wrong))
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)


def _mismatch_message(source: str, missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    def show(title: str, items: list[str]) -> str:
        head = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
        return f"{len(items)} {title} [{head}]" if items else ""

    parts = [p for p in (show("missing keys", missing), show("unexpected keys", unexpected), show("shape mismatches", wrong)) if p]
    return f"{source or 'checkpoint'} does not fit the model: " + "; ".join(parts)
