"""How far key-slice corrections can go with box prompts, and where the rest is lost.

For each object of a `3D*.npz` case with `gts` (benchmarks/make_correction_cases.py): the box user's result
after K corrections (`medsamlite evaluate-corrections`' user and rule), the ceiling (the true box on every
slice of the structure: the best any re-prompting can give with box prompts), the error voxels above
that ceiling on key slices, slices between key slices and slices beyond the outermost key slices, and
there the voxels missed and too many. `--published-beyond`: beyond a key slice the user placed, the
published next-slice rule instead of its box carried (`objects.segment(carry=False)`).

    PYTHONPATH=MedSAMLite .venv/bin/python benchmarks/eval_correction_ceiling.py CASE.npz [--corrections 3] [--published-beyond]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMLite"))

from MedSAMLiteLib.core import objects  # noqa: E402
from MedSAMLiteLib.core.objects import KeySlices  # noqa: E402
from MedSAMLiteLib.headless.cases import load_case  # noqa: E402
from MedSAMLiteLib.headless.commands import backend_args, load_segmenter  # noqa: E402
from MedSAMLiteLib.headless.corrections import _truth_box, box_correction, dice  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case")
    parser.add_argument("--corrections", type=int, default=3)
    parser.add_argument("--published-beyond", action="store_true", help="no carry: the published rule beyond user key slices")
    backend_args(parser)
    args = parser.parse_args()
    segmenter = load_segmenter(args)
    segmenter.cache.resize(4096 * 2**20)
    case = load_case(Path(args.case))
    with np.load(args.case) as data:
        gts = data["gts"]
    segmenter.set_image(case.imgs, key=("ceiling", case.name))
    excess = dict.fromkeys(("key", "between", "beyond"), 0)
    missed = too_many = 0
    carry = not args.published_beyond
    results, ceilings = [], []
    for label, box in enumerate(case.boxes, start=1):
        gt = gts == label
        obj = KeySlices.from_roi(box, gt.shape[0], segmenter.profile.propagation)
        result = objects.segment(segmenter, obj, carry=carry)
        for _ in range(args.corrections):
            step = box_correction(obj, result.volume(), gt)
            if step is None:
                break
            obj = obj.with_key(*step)
            result = objects.segment(segmenter, obj, previous=result, carry=carry)
        pred = result.volume()
        every = obj
        for z in np.flatnonzero(gt.any(axis=(1, 2))):
            every = every.with_key(int(z), _truth_box(gt[z]))
        ceiling = objects.segment(segmenter, every).volume()
        keyed, between, sweeps = obj.rules()
        beyond = {z for _, _, zs in sweeps for z in zs}
        for z in range(gt.shape[0]):
            region = "key" if z in keyed else "between" if z in between else "beyond" if z in beyond else None
            if region:
                excess[region] += int(np.logical_xor(pred[z], gt[z]).sum()) - int(np.logical_xor(ceiling[z], gt[z]).sum())
            if region == "beyond":
                missed += int((gt[z] & ~pred[z]).sum())
                too_many += int((pred[z] & ~gt[z]).sum())
        results.append(dice(pred, gt))
        ceilings.append(dice(ceiling, gt))
        print(f"object {label}: DSC after {args.corrections} corrections {results[-1]:.3f}, every slice's true box {ceilings[-1]:.3f}", flush=True)
    print(f"mean DSC after {args.corrections} corrections {np.mean(results):.3f}, ceiling {np.mean(ceilings):.3f}")
    print("error voxels above the ceiling: " + ", ".join(f"{k} {v:+d}" for k, v in excess.items()))
    print(f"beyond the outermost key slices: {missed} voxels missed, {too_many} too many "
          f"({'published rule' if args.published_beyond else 'user key boxes carried'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
