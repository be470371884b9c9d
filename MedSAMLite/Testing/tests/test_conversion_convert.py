"""The public `convert()` contract: a checkpoint file in its official layout -> (encoder, decoder) models
that reproduce the goldens; unusable files are refused in one line that names the file; torch is never
needed. torch is used here only to write checkpoint files (torch.save) into a temporary folder.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from MedSAMLiteLib.models.conversion import ARCHITECTURES, CheckpointError, ConversionError, convert, ops
from reference import (
    BOX_256, assert_close_big, assert_close_small, genuine_lite_medsam, golden, reference_input,
    rule_weights,
)

MODULE_DIR = Path(__file__).resolve().parents[2]  # MedSAMLite/, which holds MedSAMLiteLib
ENCODER = "image_encoder."
BAD_KEY = "image_encoder.neck.2.weight"


def _lightning(state: dict, variant: str) -> dict:
    """MedficientSAM's fine-tuned Lightning checkpoint: `model.`-prefixed state dict plus hyper-parameters."""
    return {
        "state_dict": OrderedDict(("model." + k, v) for k, v in state.items()),
        "hyper_parameters": argparse.Namespace(model_type=variant, lr=1e-4),
        "epoch": 3,
    }


# architecture -> (reference name, the released checkpoint's layout around the SAM state dict)
CASES = {
    "litemedsam": ("lite_medsam", lambda sd: sd),
    "medficient_l0": ("medficient_l0", lambda sd: _lightning(sd, "l0")),
    "repvit_medsam": ("repvit_medsam_m11", lambda sd: {"model": sd}),
    "medsam_vit_b": ("medsam_vit_b", lambda sd: sd),  # the slowest (~5 s): converted and run once
}


@pytest.fixture(scope="module")
def save(tmp_path_factory):
    """save(file name, object with numpy arrays) -> path of a torch.save file holding it as tensors."""
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("checkpoints")

    def as_torch(obj):
        if isinstance(obj, np.ndarray):
            return torch.from_numpy(obj)
        if isinstance(obj, dict):
            return type(obj)((k, as_torch(v)) for k, v in obj.items())
        return obj

    def write(name: str, obj) -> Path:
        torch.save(as_torch(obj), folder / name)
        return folder / name

    return write


def _check_interface(encoder, decoder, size: int) -> None:
    assert [p.get_any_name() for p in encoder.inputs] == ["image"]
    assert list(encoder.input(0).get_partial_shape().to_shape()) == [1, 3, size, size]
    assert [o.get_any_name() for o in encoder.outputs] == ["embedding"]
    assert [p.get_any_name() for p in decoder.inputs] == ["image_embeddings", "boxes"]
    assert [o.get_any_name() for o in decoder.outputs] == ["low_res_logits", "iou_predictions"]
    assert str(decoder.input("boxes").get_partial_shape()) == "[?,4]"  # N boxes, dynamic
    assert str(decoder.output("low_res_logits").get_partial_shape()) == "[?,1,256,256]"
    assert str(decoder.output("iou_predictions").get_partial_shape()) == "[?,1]"


@pytest.mark.parametrize("architecture", list(CASES))
def test_checkpoint_file_gives_golden_models(save, architecture):
    name, layout = CASES[architecture]
    path = save(f"{architecture}.pth", layout(OrderedDict(rule_weights(name))))
    encoder, decoder = convert(architecture, path)
    path.unlink()  # up to 375 MB
    size = ARCHITECTURES[architecture][0]
    _check_interface(encoder, decoder, size)

    gold = golden(name)
    embedding = ops.compile_model(encoder)({"image": reference_input(size)})["embedding"]
    assert_close_big(embedding, gold["embedding"], f"{architecture} embedding")
    # Two boxes in one call: the golden box, then another (N is dynamic; each box is decoded on its own).
    boxes = np.concatenate([gold["box"].reshape(1, 4), [[0, 0, size / 2, size / 3]]]).astype(np.float32)
    out = ops.compile_model(decoder)({"image_embeddings": embedding, "boxes": boxes})
    assert out["low_res_logits"].shape == (2, 1, 256, 256) and out["iou_predictions"].shape == (2, 1)
    assert_close_big(out["low_res_logits"][:1], gold["low_res_logits"], f"{architecture} low_res_logits")
    assert_close_small(out["iou_predictions"][:1], gold["iou_pred"], f"{architecture} iou_pred")


@pytest.fixture(scope="module")
def lite_state() -> dict[str, np.ndarray]:
    return rule_weights("lite_medsam")


@pytest.fixture(scope="module")
def lite_file(save, lite_state) -> Path:
    return save("lite_medsam.pth", lite_state)


def _wrong_architecture(save, state, lite_file):
    return "medficient_l0", lite_file, ConversionError, "does not fit medficient_l0"


def _wrong_shape(save, state, lite_file):
    bad = dict(state, **{BAD_KEY: np.zeros((256, 256, 1, 1), np.float32)})
    return "litemedsam", save("wrong_shape.pth", bad), ConversionError, f"weight {BAD_KEY} has shape"


def _truncated(save, state, lite_file):
    path = lite_file.with_name("truncated.pth")
    path.write_bytes(lite_file.read_bytes()[: lite_file.stat().st_size // 2])
    return "litemedsam", path, CheckpointError, "truncated"


def _text_file(save, state, lite_file):
    path = lite_file.with_name("notes.pth")
    path.write_text("lite_medsam weights: see the download page\n")
    return "litemedsam", path, CheckpointError, "not a PyTorch checkpoint"


def _encoder_only_distillation(save, state, lite_file):
    """A distillation run's Lightning checkpoint: student and teacher encoders, no prompt encoder or decoder."""
    encoder = {k[len(ENCODER) :]: v for k, v in state.items() if k.startswith(ENCODER)}
    students = {"student_encoder." + k: v for k, v in encoder.items()}
    teachers = {"teacher_encoder." + k: np.zeros_like(v) for k, v in encoder.items()}
    path = save("distill.ckpt", {"state_dict": {**students, **teachers}, "epoch": 1})
    return "litemedsam", path, ConversionError, "encoder-only distillation checkpoint"


@pytest.mark.parametrize(
    "make", [_wrong_architecture, _wrong_shape, _truncated, _text_file, _encoder_only_distillation],
    ids=lambda make: make.__name__.strip("_"),
)
def test_unusable_file_is_refused_in_one_line_naming_it(save, lite_state, lite_file, make):
    architecture, path, error, says = make(save, lite_state, lite_file)
    with pytest.raises(error) as caught:
        convert(architecture, path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and says in message, message


# Runs in a child interpreter where `import torch` fails: convert a file, encode, decode, save the outputs.
TORCH_FREE_CHILD = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"torch is blocked in this process (import {name})")
        return None

sys.meta_path.insert(0, NoTorch())
module_dir, checkpoint, image, outputs, box = sys.argv[1:]
sys.path.insert(0, module_dir)
import numpy as np
from MedSAMLiteLib.models.conversion import convert, ops

encoder, decoder = convert("litemedsam", checkpoint)
embedding = ops.compile_model(encoder)({"image": np.load(image)})["embedding"]
boxes = np.array([box.split(",")], dtype=np.float32)
out = ops.compile_model(decoder)({"image_embeddings": embedding, "boxes": boxes})
torch_modules = [m for m in sys.modules if m.split(".")[0] == "torch"]
assert not torch_modules, torch_modules
np.savez(outputs, embedding=embedding, logits=out["low_res_logits"], iou=out["iou_predictions"])
"""


def test_genuine_file_converts_and_runs_without_torch(tmp_path):
    checkpoint = genuine_lite_medsam()
    image, outputs = tmp_path / "image.npy", tmp_path / "outputs.npz"
    np.save(image, reference_input(256))
    box = ",".join(str(v) for v in BOX_256)
    args = [sys.executable, "-c", TORCH_FREE_CHILD, str(MODULE_DIR), str(checkpoint), str(image), str(outputs), box]
    child = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    gold = golden("lite_medsam_real")
    with np.load(outputs) as out:
        assert_close_big(out["embedding"], gold["embedding"], "embedding without torch")
        assert_close_big(out["logits"], gold["low_res_logits"], "low_res_logits without torch")
        assert_close_small(out["iou"], gold["iou_pred"], "iou_pred without torch")
