"""The small real training run of docs/training.md: distil, fine-tune, compare with the teacher.

Stages (each reads the previous one's output under --root, default runs/cpu_small):
  data      MNI152 slabs + scikit-image images as challenge .npz (medficient.training.realdata)
  store     LiteMedSAM's embeddings of every training image (`medficient train embed`)
  distill   configs/cpu_small_distill.yaml
  finetune  configs/cpu_small_finetune.yaml
  eval      teacher vs distilled vs fine-tuned on the held-out slab and coins: mask DSC against the
            ground truth and against the teacher's masks, per slice/image (GT boxes) and per case
            (3D propagation), plus encoder time per image on this CPU.
Usage: nice .venv/bin/python benchmarks/train_small_run.py [--stages data,store,distill,finetune,eval]
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

from medficient.inference.cases import load_case
from medficient.inference.preprocess import preprocess
from medficient.inference.propagate import segment_2d
from medficient.inference.runner import segment_case
from medficient.models import build_model
from medficient.samples import dice_per_label
from medficient.training.config import load_config
from medficient.training.engine import train
from medficient.training.modeling import count_parameters, engine_for, load_trained
from medficient.training.realdata import write_real_data
from medficient.training.store import write_store
from medficient.training.tasks import objects_with_boxes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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
    """Teacher and students on the held-out cases: DSC against the ground truth and against the
    teacher's masks, per object on each slice (tight ground-truth boxes) and per case (the
    challenge's 3D boxes and propagation, as `medficient predict` runs them)."""
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
        gt_s, ag_s, gt_c, ag_c = [], [], [], []
        t0 = time.perf_counter()
        for case in cases:
            for k, (image, labels) in enumerate(labelled_slices(case)):
                gts, boxes = objects_with_boxes(labels)
                segs = segment_2d(engine, image, boxes)
                gt_s += dice_per_label(segs, gts, len(boxes))
                if name == "teacher":
                    reference[(case.name, k)] = segs
                else:
                    ag_s += dice_per_label(segs, reference[(case.name, k)], len(boxes))
            segs = segment_case(engine, case)
            n = int(case.gts.max())
            gt_c += dice_per_label(segs, case.gts, n)
            if name == "teacher":
                reference[(case.name, -1)] = segs
            else:
                ag_c += dice_per_label(segs, reference[(case.name, -1)], n)
        r = results[name]
        r.update(slice_objects=len(gt_s), slice_dsc_vs_gt=float(np.mean(gt_s)), case_dsc_vs_gt=float(np.mean(gt_c)),
                 eval_seconds=time.perf_counter() - t0)
        if ag_s:
            r.update(slice_dsc_vs_teacher=float(np.mean(ag_s)), case_dsc_vs_teacher=float(np.mean(ag_c)))
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
