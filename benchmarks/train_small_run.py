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
from medficient.inference.preprocess import mask_bbox, preprocess
from medficient.inference.propagate import segment_2d
from medficient.inference.runner import segment_case
from medficient.models import build_model
from medficient.samples import dice_per_label
from medficient.training.config import load_config
from medficient.training.engine import train
from medficient.training.modeling import count_parameters, engine_for, load_trained
from medficient.training.realdata import write_real_data
from medficient.training.store import write_store

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / denom) if denom else float("nan")


def per_slice(engine, case) -> list[np.ndarray]:
    """Label maps of every held-out image/slice with a ground-truth object, boxes from the GT."""
    out = []
    images = [case.imgs] if case.kind == "2D" else list(case.imgs)
    labels = [case.gts] if case.kind == "2D" else list(case.gts)
    for image, gts in zip(images, labels):
        present = [v for v in np.unique(gts) if v > 0]
        if not present:
            continue
        boxes = np.stack([mask_bbox(gts == v) for v in present])
        segs = segment_2d(engine, image, boxes)
        out.append((segs, np.array(present)))
    return out


def evaluate(root: Path, threads: int) -> dict:
    torch.set_num_threads(threads)
    models = {"teacher (LiteMedSAM)": (lambda: (m := build_model("lite_medsam"), m.spec.profile))()}
    for stage in ("distill", "finetune"):
        path = root / stage / "model.pth"
        if path.is_file():
            models[f"student after {stage}"] = load_trained(path)
    cases = []
    for p in sorted((root / "data" / "val").glob("*.npz")):
        c = load_case(p)
        with np.load(p) as d:
            c.gts = d["gts"]
        cases.append(c)
    results: dict[str, dict] = {}
    teacher_slices, teacher_cases = {}, {}
    for name, (sam, profile) in models.items():
        engine = engine_for(sam, profile)
        r: dict[str, float] = {"encoder_params_M": count_parameters(sam.image_encoder) / 1e6}
        x, _ = preprocess(cases[0].imgs[len(cases[0].imgs) // 2] if cases[0].kind == "3D" else cases[0].imgs, profile)
        with torch.no_grad():
            sam.image_encoder(torch.from_numpy(x))
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                sam.image_encoder(torch.from_numpy(x))
                times.append(time.perf_counter() - t0)
        r["encoder_seconds_per_image"] = statistics.median(times)
        gt_s, ag_s, gt_c, ag_c, case_time = [], [], [], [], 0.0
        for case in cases:
            slices = per_slice(engine, case)
            for k, (segs, present) in enumerate(slices):
                gts = case.gts if case.kind == "2D" else None
                if case.kind == "3D":
                    z = [z for z in range(len(case.gts)) if case.gts[z].any()][k]
                    gts = case.gts[z]
                for j, v in enumerate(present, start=1):
                    gt_s.append(dice(segs == j, gts == v))
                if name.startswith("teacher"):
                    teacher_slices[(case.name, k)] = segs
                else:
                    t = teacher_slices[(case.name, k)]
                    ag_s += [dice(segs == j, t == j) for j in range(1, len(present) + 1)]
            t0 = time.perf_counter()
            segs = segment_case(engine, case)
            case_time += time.perf_counter() - t0
            gt_c += dice_per_label(segs, case.gts)
            if name.startswith("teacher"):
                teacher_cases[case.name] = segs
            else:
                t = teacher_cases[case.name]
                ag_c += [dice(segs == j, t == j) for j in range(1, int(case.gts.max()) + 1)]
        r.update(
            slice_objects=len(gt_s),
            slice_dsc_vs_gt=float(np.nanmean(gt_s)),
            case_dsc_vs_gt=float(np.mean(gt_c)),
            seconds_all_cases=case_time,
        )
        if ag_s:
            r.update(slice_dsc_vs_teacher=float(np.nanmean(ag_s)), case_dsc_vs_teacher=float(np.nanmean(ag_c)))
        results[name] = r
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
