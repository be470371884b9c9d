"""Training on tiny real data (MNI152 slices, scikit-image images) with tiny students, on CPU."""
import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medsamlite_torch.cli import main
from medsamlite_torch.training.config import ConfigError, config_from_dict, load_config
from medsamlite_torch.training.data import collate
from medsamlite_torch.training.engine import build_data, train
from medsamlite_torch.training.realdata import write_real_data
from medsamlite_torch.training.tasks import make_task

TINY = {"widths": [8, 16, 16, 32, 32], "depths": [1, 1, 1, 1, 1], "head_depth": 1, "head_width": 32, "qkv_dim": 8}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3 training slabs of 3 MNI slices, coins/phantom/retina; held out: a slab and half the coins."""
    return write_real_data(tmp_path_factory.mktemp("data"), every=10)


def tiny(dirs, out, task="finetune", **sections) -> dict:
    train_dir, val_dir = dirs
    cfg = {
        "task": task,
        "seed": 3,
        "output_dir": str(out),
        "data": {"train": [str(train_dir)], "val": [str(val_dir)], "val_max_items": 1, "objects_per_image": 1},
        # random prompt encoder + decoder (no LiteMedSAM load): these tests check the machinery
        "student": {"model": "medficient_l0", "image_size": 64, "encoder": dict(TINY), "decoder_from": None},
        "augment": {"hflip": 0.5, "vflip": 0.5},
        "optim": {"lr": 1e-3, "weight_decay": 5e-4, "grad_clip": 1.0},
        "train": {"epochs": 1, "max_steps": 2, "batch_size": 2, "log_every": 1, "progress": False, "threads": 1},
    }
    if task == "distill":
        cfg["teacher"] = {"model": "medficient_l0", "image_size": 96, "encoder": {**TINY, "head_depth": 2}, "decoder_from": None}
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values} if isinstance(values, dict) else values
    return cfg


def write_yaml(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args, check=True) -> tuple[int, str]:
    """`medsamlite-torch ARGS` in this process (saves a torch import per call): (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(list(args))
    if check:
        assert rc == 0, err.getvalue()
    return rc, err.getvalue()


def train_rows(folder: Path) -> dict[tuple[int, str], float]:
    with (folder / "metrics.csv").open() as f:
        return {(int(r["step"]), r["name"]): float(r["value"]) for r in csv.DictReader(f) if r["split"] == "train"}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_cli_distill_then_finetune(data, tmp_path):
    d = tiny(data, tmp_path / "distill", "distill", augment={"random_resized_crop": {"p": 1.0, "scale": [0.5, 1.0]}, "batch_mix": {"cutmix": 1, "mixpatch": 1, "none": 0}})
    cli("train", "distill", "--config", str(write_yaml(d, tmp_path / "d.yaml")))
    out = tmp_path / "distill"
    assert {"model.pth", "last.pt", "best.pth", "metrics.csv"} <= {p.name for p in out.iterdir()}
    assert any((out / "tensorboard").iterdir())
    rows = train_rows(out)
    assert rows[(1, "mse")] > 0 and (2, "mse") in rows
    # fine-tune from the distilled model (student encoder + the teacher's decoder), RepViT-MedSAM losses
    f = tiny(data, tmp_path / "ft", student={"checkpoint": str(out / "model.pth")}, teacher=d["teacher"],
             losses={"dice": 1, "bce": 1, "iou_mse": 1, "teacher_bce": 1},
             augment={"shift_scale_rotate": {"p": 1.0}, "rot90": 0.5}, data={"objects_per_image": 2})
    cli("train", "finetune", "--config", str(write_yaml(f, tmp_path / "f.yaml")))
    rows = train_rows(tmp_path / "ft")
    assert {(2, k) for k in ("dice", "bce", "iou_mse", "teacher_bce")} <= set(rows)
    with (tmp_path / "ft" / "metrics.csv").open() as fh:
        val = {r["name"] for r in csv.DictReader(fh) if r["split"] == "val"}
    assert {"dsc", "teacher_agreement_dsc"} <= val
    # the distilled decoder came from the teacher, the fine-tuned one moved away from it
    start, end = weights(out / "model.pth"), weights(tmp_path / "ft" / "model.pth")
    assert not torch.equal(start["mask_decoder.iou_token.weight"], end["mask_decoder.iou_token.weight"])


def test_wrong_task_and_bad_key_are_one_line_errors(data, tmp_path):
    cfg = write_yaml(tiny(data, tmp_path / "x"), tmp_path / "f.yaml")
    rc, err = cli("train", "distill", "--config", str(cfg), check=False)
    assert rc == 2 and "finetune" in err and "Traceback" not in err
    bad = tiny(data, tmp_path / "x")
    bad["optim"]["learning_rate"] = 1
    rc, err = cli("train", "finetune", "--config", str(write_yaml(bad, tmp_path / "b.yaml")), check=False)
    assert rc == 2 and "optim: unknown key(s) learning_rate" in err


def test_bad_training_file_is_skipped_and_named(data, tmp_path):
    folder = tmp_path / "train"
    shutil.copytree(data[0], folder)
    (folder / "2DBox_CT_broken.npz").write_bytes(b"not a zip")
    cfg = tiny((folder, data[1]), tmp_path / "unused", train={"max_steps": 3}, data={"val": []})
    path = write_yaml(cfg, tmp_path / "c.yaml")
    _, err = cli("train", "finetune", "--config", str(path), "--set", "train.max_steps=1", "--output", str(tmp_path / "out"))
    assert "skipped" in err and "2DBox_CT_broken.npz" in err
    assert (tmp_path / "out" / "model.pth").is_file() and not (tmp_path / "unused").exists()
    assert {step for step, _ in train_rows(tmp_path / "out")} == {1}  # --set train.max_steps=1 won
    # a weights-only file cannot be resumed from: one line, exit status 2
    rc, err = cli("train", "finetune", "--config", str(path), "--resume", str(tmp_path / "out" / "model.pth"), check=False)
    assert rc == 2 and "not a training checkpoint" in err and "Traceback" not in err


@pytest.mark.parametrize("task, lr, steps, ratio, items", [("distill", 1e-2, 8, 0.5, (0, -1)), ("finetune", 3e-4, 6, 0.9, (-1,))])
def test_loss_decreases_on_a_fixed_batch(data, tmp_path, task, lr, steps, ratio, items):
    cfg = config_from_dict(tiny(data, tmp_path, task, augment={"hflip": 0, "vflip": 0}))
    torch.manual_seed(0)
    t = make_task(cfg)
    train_data, _, _ = build_data(cfg, t, main=False)
    batch = collate([train_data[(i % len(train_data), seed)] for seed, i in enumerate(items)])
    params = [p for p in t.trainable.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    losses = []
    for step in range(steps):
        loss, _ = t.loss(t.trainable, batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < ratio * losses[0], losses


def test_resume_gives_the_uninterrupted_run(data, tmp_path):
    """Distillation with per-sample augmentation (in a worker process) and per-step CutMix/MixPatch:
    resuming from the step-2 checkpoint (mid-schedule, start of epoch 1) repeats steps 3-4 exactly."""
    sections = dict(
        data={"samples_per_epoch": 4, "val": [], "num_workers": 1},  # a DataLoader worker process
        train={"epochs": 2, "max_steps": None, "keep_every": 2},
        schedule={"kind": "exponential", "gamma": 0.5},
        augment={"shift_scale_rotate": {"p": 0.5}, "batch_mix": {"cutmix": 1, "mixpatch": 1, "none": 1}},
    )
    train(config_from_dict(tiny(data, tmp_path / "full", "distill", **sections)))
    part = tmp_path / "resumed"
    train(config_from_dict(tiny(data, part, "distill", **sections)), resume=str(tmp_path / "full" / "checkpoint-0000002.pt"))
    a, b = train_rows(tmp_path / "full"), train_rows(part)
    assert (1, "loss") not in b and (3, "loss") in b  # the resumed run started at step 3
    for step in (3, 4):
        assert b[(step, "loss")] == a[(step, "loss")]
        assert b[(step, "lr")] == a[(step, "lr")] == 1e-3 * 0.5  # epoch 1 of the exponential schedule
    for k, v in weights(tmp_path / "full" / "model.pth").items():
        assert torch.equal(v, weights(part / "model.pth")[k]), k


def test_two_process_torchrun_equals_one_process(data, tmp_path):
    sections = dict(train={"max_steps": 2, "batch_size": 4, "freeze_bn": True, "threads": 1}, data={"val": [], "objects_per_image": 2})
    one = write_yaml(tiny(data, tmp_path / "one", **sections), tmp_path / "one.yaml")
    two = write_yaml(tiny(data, tmp_path / "two", **sections), tmp_path / "two.yaml")
    cli("train", "finetune", "--config", str(one))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "medsamlite_torch.cli", "train", "finetune", "--config", str(two)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    a, b = train_rows(tmp_path / "one"), train_rows(tmp_path / "two")
    for step in (1, 2):
        assert b[(step, "loss")] == pytest.approx(a[(step, "loss")], rel=1e-4)
    wa, wb = weights(tmp_path / "one" / "model.pth"), weights(tmp_path / "two" / "model.pth")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
    assert a[(2, "grad_norm")] > 0 and a[(1, "loss")] != a[(2, "loss")]  # it did train


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.train"):
        config_from_dict({"task": "finetune"})
    with pytest.raises(ConfigError, match="losses: mse not available for finetune"):
        config_from_dict({"task": "finetune", "data": {"train": ["x"]}, "losses": {"mse": 1}})
    with pytest.raises(ConfigError, match="teacher.embeddings"):
        config_from_dict({"task": "distill", "data": {"train": ["x"]}, "teacher": {"embeddings": "s"}, "augment": {"hflip": 0.5}})
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")


def test_finetuned_registry_model_loads_everywhere_and_segments(data, tmp_path):
    """One step of the registry MedficientSAM-L0 architecture (trained on 64-px inputs to keep the
    test fast); its model.pth and last.pt load strictly with build_model, segment a case through the
    core's segmenter, and model.pth fits the extension's torch-free converter."""
    from MedSAMLiteLib.models.conversion import convert
    from MedSAMLiteLib.headless.cases import load_case
    from MedSAMLiteLib.headless.runner import segment_case
    from MedSAMLiteLib.core.segmenter import Segmenter

    from medsamlite_torch import build_model
    from medsamlite_torch.engine import TorchEngine

    cfg = tiny(data, tmp_path / "l0", student={"model": "medficient_l0", "image_size": 64, "encoder": {}, "decoder_from": "lite_medsam"},
               train={"max_steps": 1, "batch_size": 1}, data={"val": []})
    summary = train(config_from_dict(cfg))
    trained = weights(tmp_path / "l0" / "model.pth")
    for name in ("model.pth", "last.pt"):
        model = build_model("medficient_l0", checkpoint=tmp_path / "l0" / name)
        for k, v in model.state_dict().items():
            assert torch.equal(v, trained[k]), k
    # the fine-tuned decoder differs from LiteMedSAM's, where it started
    lite = build_model("lite_medsam").state_dict()
    assert not torch.equal(trained["mask_decoder.iou_token.weight"], lite["mask_decoder.iou_token.weight"])
    case = load_case(data[1] / "2DBox_Microscopy_coinsright.npz")
    segs = segment_case(Segmenter(TorchEngine.load("medficient_l0", summary["model"])), case)
    assert segs.shape == case.imgs.shape[:2] and segs.max() > 0
    encoder, decoder = convert("medficient_l0", summary["model"])
    assert [o.get_any_name() for o in decoder.outputs] == ["low_res_logits", "iou_predictions"]


def test_embedding_store_holds_the_teacher_embeddings(data, tmp_path):
    from medsamlite_torch import build_model
    from MedSAMLiteLib.core.preprocess import preprocess

    folder = tmp_path / "few"
    folder.mkdir()
    shutil.copy(data[0] / "2DBox_CT_phantom.npz", folder)
    shutil.copy(data[0] / "2DBox_Microscopy_coinsleft.npz", folder)
    cfg = tiny((folder, data[1]), tmp_path / "d", "distill", teacher={"model": "lite_medsam", "image_size": None, "encoder": {}},
               augment={"hflip": 0, "vflip": 0}, data={"val": []})
    path = write_yaml(cfg, tmp_path / "d.yaml")
    _, err = cli("train", "embed", "--config", str(path), "--out", str(tmp_path / "store"), "--dry-run")
    assert "2 images/slices" in err and f"{2 * 2 * 256 * 64 * 64 / 2**30:.2f} GiB" in err
    assert not (tmp_path / "store").exists()
    cli("train", "embed", "--config", str(path), "--out", str(tmp_path / "store"))
    stored = np.load(tmp_path / "store" / "embeddings.npy")
    teacher = build_model("lite_medsam")
    with np.load(folder / "2DBox_CT_phantom.npz") as d:
        x, _ = preprocess(d["imgs"], teacher.spec.profile)
    with torch.no_grad():
        expected = teacher.image_encoder(torch.from_numpy(x))[0].numpy()
    assert stored.shape == (2, 256, 64, 64) and stored.dtype == np.float16
    np.testing.assert_allclose(stored[0].astype(np.float32), expected, atol=2e-2, rtol=1e-2)  # sorted: phantom first
    cfg["teacher"]["embeddings"] = str(tmp_path / "store")
    cli("train", "distill", "--config", str(write_yaml(cfg, tmp_path / "d2.yaml")))
    assert train_rows(tmp_path / "d")[(1, "mse")] > 0  # 2 items, batch 2: one step per epoch
