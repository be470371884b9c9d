"""RepViT-MedSAM (TurboMedSAM RepViT-M1.1) image encoder, unfused and after fuse(), against the reference."""
import time

import pytest
import torch

from medsamlite_torch.models.repvit import repvit_m1_1_sam_encoder
from reference import golden, read_keys
from torch_reference import assert_close_big, reference_input, rule_state_dict, warm_up

NAME = "repvit_medsam_m11"
FUSED = "repvit_medsam_m11_fused"
PREFIX = "image_encoder."


def _expected(name: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(k[len(PREFIX) :], shape) for k, shape, _ in read_keys(name) if k.startswith(PREFIX)]


def _layout(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _timed(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        start = time.perf_counter()
        out = module(x)
        return out, time.perf_counter() - start


@pytest.fixture(scope="module")
def runs() -> dict:
    """One encoder with the rule weights, run at 1024 before and after fuse() (a few seconds on CPU)."""
    warm_up()
    enc = repvit_m1_1_sam_encoder()
    enc.load_state_dict(rule_state_dict(NAME, PREFIX), strict=True)
    enc.eval()
    x = reference_input(1024)
    unfused, t_unfused = _timed(enc, x)
    fused_enc = enc.fuse()
    fused, t_fused = _timed(enc, x)
    return {"unfused": unfused, "fused": fused, "encoder": enc, "fuse_returned": fused_enc, "t": (t_unfused, t_fused)}


def test_keys_shapes_and_parameter_count():
    enc = repvit_m1_1_sam_encoder()
    assert _layout(enc) == _expected(NAME)
    assert sum(p.numel() for p in enc.parameters()) == 8_496_784


def test_embedding_matches_golden(runs):
    out = runs["unfused"]
    assert out.shape == (1, 256, 64, 64)
    assert_close_big(out, golden(NAME)["embedding"], "embedding")


def test_fused_layout(runs):
    enc = runs["encoder"]
    assert runs["fuse_returned"] is enc
    assert _layout(enc) == _expected(FUSED)
    assert sum(p.numel() for p in enc.parameters()) == 8_453_232
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())


def test_fused_embedding_matches_golden_and_unfused(runs):
    fused = runs["fused"]
    t_unfused, t_fused = runs["t"]
    print(f"RepViT forward at 1024: unfused {t_unfused:.2f} s, fused {t_fused:.2f} s")
    assert_close_big(fused, golden(FUSED)["embedding"], "fused embedding")
    assert_close_big(fused, runs["unfused"].numpy(), "fused vs unfused embedding")
