"""The small real training run of docs/training.md: distil, fine-tune, compare with the teacher.

Stages (each reads the previous one's output under --root, default runs/cpu_small):
  data      MNI152 slabs + scikit-image images as challenge .npz (medsamlite_torch.training.realdata)
  store     LiteMedSAM's embeddings of every training image (`medsamlite-torch train embed`)
  distill   pytorch/configs/cpu_small_distill.yaml
  finetune  pytorch/configs/cpu_small_finetune.yaml
  eval      teacher vs distilled vs fine-tuned on the held-out slab and coins: mask DSC against the
            ground truth and against the teacher's masks, per object on each slice/image (GT boxes)
            and per case (3D propagation), plus encoder time per image on this CPU.
Usage: nice .venv/bin/python pytorch/benchmarks/train_small_run.py [--stages data,store,distill,finetune,eval]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from MedSAMLiteLib.headless.cases import load_case
from MedSAMLiteLib.headless.runner import segment_case
from MedSAMLiteLib.headless.samples import dice_per_label
from MedSAMLiteLib.core.preprocess import preprocess
from MedSAMLiteLib.core.propagate import object_masks
from MedSAMLiteLib.core.segmenter import Segmenter

from medsamlite_torch.models import build_model
from medsamlite_torch.training.config import load_config
from medsamlite_torch.training.engine import train
from medsamlite_torch.training.modeling import count_parameters, engine_for, load_trained
from medsamlite_torch.training.realdata import write_real_data
from medsamlite_torch.training.store import write_store
from medsamlite_torch.training.tasks import object_dice, objects_with_boxes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # pytorch/configs


def labelled_slices(case) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, label map) of every held-out 2D image / 3D slice with a ground-truth object."""
    pairs = [(case.imgs, case.gts)] if case.kind == "2D" else list(zip(case.imgs, case.gts))
    return [(image, labels) for image, labels in pairs if labels.any()]


def encoder_seconds(models: dict, image: np.ndarray, rounds: int = 5) -> dict[str, float]:
    """Median seconds per image of each encoder (batch 1), the models taking turns each round so
    that load from other processes on the machine hits them alike."""
    inputs = {name: torch.from_numpy(preprocess(image, profile)[0]) for name, (_, profile) in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for name, (sam, _) in models.items():
            sam.image_encoder(inputs[name])  # warm-up
        for _ in range(rounds):
            for name, (sam, _) in models.items():
                t0 = time.perf_counter()
                sam.image_encoder(inputs[name])
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def evaluate(root: Path, threads: int) -> dict:
    """Teacher and students on each held-out case: DSC against the ground truth and against the
    teacher's masks, per object on each slice (tight ground-truth boxes, each object scored on its
    own) and per case (the file's boxes, 3D propagation, one label map: as `medsamlite predict`)."""
    torch.set_num_threads(threads)
    teacher = build_model("lite_medsam")
    models = {"teacher": (teacher, teacher.spec.profile)}
    for stage in ("distill", "finetune"):
        path = root / stage / "model.pth"
        if path.is_file():
            models[stage] = load_trained(path)
    cases = []
    for p in sorted((root / "data" / "val").glob("*.npz")):
        case = load_case(p)
        with np.load(p) as d:
            case.gts = d["gts"]
        cases.append(case)
    results: dict[str, dict] = {name: {"encoder_params_M": count_parameters(sam.image_encoder) / 1e6} for name, (sam, _) in models.items()}
    mid = cases[0].imgs[len(cases[0].imgs) // 2] if cases[0].kind == "3D" else cases[0].imgs
    for name, seconds in encoder_seconds(models, mid).items():
        results[name]["encoder_seconds_per_image"] = seconds
    reference: dict[tuple[str, int], np.ndarray] = {}  # the teacher's masks (slices and cases)
    for name, (sam, profile) in models.items():
        engine = engine_for(sam, profile)
        t0 = time.perf_counter()
        r = results[name]
        for case in cases:
            gt_s, ag_s = [], []
            for k, (image, labels) in enumerate(labelled_slices(case)):
                gts, boxes = objects_with_boxes(labels)
                masks = object_masks(engine, image, boxes)
                gt_s += object_dice(masks, gts)
                if name == "teacher":
                    reference[(case.name, k)] = masks
                else:
                    ag_s += object_dice(masks, reference[(case.name, k)])
            segs = segment_case(Segmenter(engine), case)
            n = int(case.gts.max())
            r[f"{case.name}: slice objects"] = len(gt_s)
            r[f"{case.name}: slice DSC vs GT"] = float(np.mean(gt_s))
            r[f"{case.name}: case DSC vs GT"] = float(np.mean(dice_per_label(segs, case.gts, n)))
            if name == "teacher":
                reference[(case.name, -1)] = segs
            else:
                r[f"{case.name}: slice DSC vs teacher"] = float(np.mean(ag_s))
                r[f"{case.name}: case DSC vs teacher"] = float(np.mean(dice_per_label(segs, reference[(case.name, -1)], n)))
        r["eval_seconds"] = time.perf_counter() - t0
        print(name, json.dumps(r), file=sys.stderr, flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="runs/cpu_small")
    ap.add_argument("--stages", default="data,store,distill,finetune,eval")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    root = Path(args.root)
    stages = args.stages.split(",")
    timings = {}
    overrides = lambda stage: [f"output_dir={root / stage}", f"data.train=[{root / 'data' / 'train'}]", f"data.val=[{root / 'data' / 'val'}]"]
    for stage in stages:
        t0 = time.perf_counter()
        if stage == "data":
            write_real_data(root / "data")
        elif stage == "store":
            cfg = load_config(CONFIGS / "cpu_small_distill.yaml", overrides("distill"))
            write_store(cfg, root / "store")
        elif stage in ("distill", "finetune"):
            extra = [f"teacher.embeddings={root / 'store'}"] if stage == "distill" else [f"student.checkpoint={root / 'distill' / 'model.pth'}"]
            train(load_config(CONFIGS / f"cpu_small_{stage}.yaml", overrides(stage) + extra))
        elif stage == "eval":
            res = evaluate(root, args.threads)
            (root / "eval.json").write_text(json.dumps(res, indent=1))
        timings[stage] = time.perf_counter() - t0
        print(f"stage {stage}: {timings[stage]:.0f} s", file=sys.stderr, flush=True)
    (root / f"timings-{'-'.join(stages)}.json").write_text(json.dumps(timings, indent=1))


if __name__ == "__main__":
    main()
