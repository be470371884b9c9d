"""Whole registry models: state_dict layout, golden outputs end to end, parameter counts."""
import numpy as np
import pytest
import torch

import medsamlite_torch
from reference import NAMES, golden, read_keys
from torch_reference import assert_close_big, assert_close_small, reference_input, warm_up, write_rule_checkpoints

PARAMS = {  # reference README: total, image encoder
    "lite_medsam": (9_791_300, 5_726_740),
    "medficient_l0": (34_792_784, 30_728_224),
    "medficient_l1": (47_650_128, 43_585_568),
    "medficient_l2": (61_328_592, 57_264_032),
    "medsam_vit_b": (93_735_472, 89_670_912),
    "repvit_medsam_m11": (12_561_344, 8_496_784),
}


@pytest.fixture(scope="module")
def rule_checkpoints(tmp_path_factory):
    return write_rule_checkpoints(tmp_path_factory.mktemp("rule_weights"))


def run_golden_forward(model, size: int, box: np.ndarray):
    with torch.no_grad():
        emb = model.image_encoder(reference_input(size))
        sparse, dense = model.prompt_encoder(points=None, boxes=torch.from_numpy(box), masks=None)
        logits, iou = model.mask_decoder(
            image_embeddings=emb,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
    return {"embedding": emb, "sparse_embeddings": sparse, "dense_embeddings": dense, "low_res_logits": logits, "iou_pred": iou}


def check_against(out: dict, g: dict) -> None:
    assert_close_big(out["embedding"], g["embedding"], "embedding")
    assert_close_big(out["low_res_logits"], g["low_res_logits"], "low_res_logits")
    assert_close_small(out["iou_pred"], g["iou_pred"], "iou_pred")
    assert_close_small(out["sparse_embeddings"], g["sparse_embeddings"], "sparse")
    assert_close_small(out["dense_embeddings"], g["dense_embeddings"], "dense")


@pytest.mark.parametrize("name", NAMES)
def test_model_matches_golden(name, rule_checkpoints):
    warm_up()
    model = medsamlite_torch.build_model(name, checkpoint=rule_checkpoints[name])
    assert not model.training
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == {k: s for k, s, _ in read_keys(name)}
    total = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.image_encoder.parameters())
    assert (total, encoder) == PARAMS[name]
    g = golden(name)
    check_against(run_golden_forward(model, int(g["image_size"]), g["box"]), g)


def test_lite_medsam_genuine_weights():
    warm_up()
    model = medsamlite_torch.build_model("lite_medsam")  # the published weights, fetched once
    g = golden("lite_medsam_real")
    check_against(run_golden_forward(model, 256, g["box"]), g)


def test_repvit_fused_matches_golden_and_unfused(rule_checkpoints):
    warm_up()
    model = medsamlite_torch.build_model("repvit_medsam_m11", checkpoint=rule_checkpoints["repvit_medsam_m11"])
    unfused = run_golden_forward(model, 1024, golden("repvit_medsam_m11")["box"])
    model.image_encoder.fuse()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    g = golden("repvit_medsam_m11_fused")
    fused = run_golden_forward(model, 1024, g["box"])
    check_against(fused, g)
    assert_close_big(fused["embedding"], unfused["embedding"].numpy(), "fused vs unfused embedding")
    assert_close_big(fused["low_res_logits"], unfused["low_res_logits"].numpy(), "fused vs unfused logits")


def test_other_models_need_weights_or_explicit_random_init():
    with pytest.raises(ValueError, match="pretrained=False"):
        medsamlite_torch.build_model("medficient_l0")
    model = medsamlite_torch.build_model("medficient_l0", pretrained=False)
    assert not model.training


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        medsamlite_torch.build_model("sam_huge")
