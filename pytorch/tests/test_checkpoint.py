"""Checkpoint layouts and the errors for checkpoints that do not fit."""
import argparse

import pytest
import torch

import medsamlite_torch
from medsamlite_torch.checkpoint import CheckpointError
from torch_reference import rule_state_dict


@pytest.fixture(scope="module")
def rule():
    return rule_state_dict("lite_medsam")


def _same_weights(model, state):
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items())


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "lightning"])
def test_layouts_load(tmp_path, rule, wrap):
    payload = {
        "plain": rule,
        "model": {"model": rule, "epoch": 3},
        "state_dict": {"state_dict": rule},
        "lightning": {"state_dict": {f"model.{k}": v for k, v in rule.items()}, "global_step": 10},
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    assert _same_weights(medsamlite_torch.build_model("lite_medsam", checkpoint=path), rule)


def test_student_encoder_distillation_checkpoint(tmp_path, rule):
    enc = {k[len("image_encoder.") :]: v for k, v in rule.items() if k.startswith("image_encoder.")}
    state = {f"student_encoder.{k}": v for k, v in enc.items()}
    state.update({f"teacher_encoder.{k}": torch.zeros_like(v) for k, v in enc.items()})
    path = tmp_path / "distill.ckpt"
    torch.save({"state_dict": state}, path)
    model = medsamlite_torch.build_model("lite_medsam", checkpoint=path)
    own = model.image_encoder.state_dict()
    assert all(torch.equal(own[k], v) for k, v in enc.items())


def test_lightning_checkpoint_with_pickled_hparams_needs_trust(tmp_path, rule):
    hparams = argparse.Namespace(lr=1e-3)  # stands for Lightning's pickled AttributeDict
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in rule.items()}, "hyper_parameters": hparams}, path)
    with pytest.raises(CheckpointError, match="trust"):
        medsamlite_torch.build_model("lite_medsam", checkpoint=path)
    model = medsamlite_torch.build_model("lite_medsam", checkpoint=path, trust_pickle=True)
    assert _same_weights(model, rule)


def test_missing_key_is_named(tmp_path, rule):
    state = dict(rule)
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"1 missing keys \[mask_decoder.iou_token.weight\]"):
        medsamlite_torch.build_model("lite_medsam", checkpoint=tmp_path / "m.pth")


def test_wrong_shape_and_unexpected_key_are_named(tmp_path, rule):
    state = dict(rule)
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(CheckpointError) as err:
        medsamlite_torch.build_model("lite_medsam", checkpoint=tmp_path / "w.pth")
    msg = str(err.value)
    assert "shape mismatches" in msg and "(2, 256)" in msg and "(1, 256)" in msg
    assert "unexpected keys [extra.weight]" in msg


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b""])
def test_non_checkpoint_file(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        medsamlite_torch.build_model("lite_medsam", checkpoint=path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        medsamlite_torch.build_model("lite_medsam", checkpoint=tmp_path / "nope.pth")
