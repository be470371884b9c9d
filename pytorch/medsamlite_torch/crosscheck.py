"""`medsamlite-torch crosscheck`: a registry model in PyTorch vs MedSAMLite's torch-free conversion.

The extension builds its OpenVINO graphs straight from checkpoint weights
(`MedSAMLiteLib.models.conversion.convert`); this runs both on a real image from the same weights and
reports how far they are apart. The encoders get the same preprocessed image; the converted decoder
gets torch's embedding, so each half is checked on its own. Agreement means max |diff| <= 1e-4 * s
and mean |diff| <= 1e-5 * s for embedding and logits, s = max(1, max |torch|), and max |diff| <=
1e-5 for the IoU prediction (the reference tolerances both sides meet against the golden outputs;
f32 on both sides).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# output -> (max |diff| / s, mean |diff| / s), s = max(1, max |torch|); IoU: absolute max only
TOLERANCES: dict[str, tuple[float, float | None]] = {
    "embedding": (1e-4, 1e-5),
    "low_res_logits": (1e-4, 1e-5),
    "iou_predictions": (1e-5, None),
}


def example_inputs(profile) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's camera man preprocessed for `profile`, and three boxes (N, 4) in prompt space."""
    from MedSAMLiteLib.core.preprocess import map_boxes, preprocess
    from skimage import data

    image = np.asarray(data.camera())  # 512 x 512 uint8
    x, geom = preprocess(image, profile)
    boxes = np.array([[150, 40, 330, 300], [60, 300, 470, 510], [230, 80, 290, 160]], np.float64)
    return x, map_boxes(boxes, geom).astype(np.float32)


def _torch_model(name: str, weights: str | Path | Mapping[str, np.ndarray], trust_pickle: bool):
    import torch

    from .checkpoint import load_state_dict_checked
    from .models import build_model

    if isinstance(weights, Mapping):
        model = build_model(name, pretrained=False)
        load_state_dict_checked(model, {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}, source="weights")
        return model
    return build_model(name, weights, trust_pickle=trust_pickle)


def crosscheck(name: str, weights: str | Path | Mapping[str, np.ndarray], trust_pickle: bool = False) -> dict[str, dict[str, float]]:
    """Per output: max_abs_diff, mean_abs_diff, scale (max(1, max |torch|)) and ok (within TOLERANCES).

    `weights` is a checkpoint file (read by each side's own loader) or a mapping key -> array in the
    layout of the published state dicts.
    """
    import torch
    from MedSAMLiteLib.models.conversion import convert
    from MedSAMLiteLib.models.conversion.ops import compile_model

    model = _torch_model(name, weights, trust_pickle)
    encoder, decoder = (compile_model(m) for m in convert(model.spec.architecture, weights))
    x, boxes = example_inputs(model.spec.profile)
    with torch.no_grad():
        emb = model.image_encoder(torch.from_numpy(x))
        logits, iou = model.decode_boxes(emb, torch.from_numpy(boxes))
    expected = {"embedding": emb.numpy(), "low_res_logits": logits.numpy(), "iou_predictions": iou.numpy()}
    decoded = decoder({"image_embeddings": expected["embedding"], "boxes": boxes})
    got = {"embedding": encoder(x)["embedding"], **{k: decoded[k] for k in ("low_res_logits", "iou_predictions")}}
    report = {}
    for output, (max_tol, mean_tol) in TOLERANCES.items():
        want = expected[output].astype(np.float64)
        diff = np.abs(np.asarray(got[output], np.float64) - want)
        assert diff.shape == want.shape, f"{output}: shape {diff.shape} != {want.shape}"
        scale = max(1.0, float(np.abs(want).max())) if mean_tol is not None else 1.0
        ok = diff.max() <= max_tol * scale and (mean_tol is None or diff.mean() <= mean_tol * scale)
        report[output] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "scale": scale, "ok": bool(ok)}
    return report


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "crosscheck", help="PyTorch vs MedSAMLite's torch-free OpenVINO conversion of the same weights",
        description="Run a registry model in PyTorch and MedSAMLiteLib.models.conversion's OpenVINO graphs of the same "
                    "weights on a real image; print the max |diff| of embedding, logits and IoU. Exit status 1 "
                    "when they disagree beyond the reference tolerances.")
    p.add_argument("--model", required=True, help="registry model: lite_medsam, medficient_l0/l1/l2, repvit_medsam_m11, medsam_vit_b")
    p.add_argument("--checkpoint", help="weights file (default: the published LiteMedSAM weights, lite_medsam only)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="let torch unpickle arbitrary objects (Lightning hyper-parameters) on the PyTorch side")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from MedSAMLiteLib.models.conversion import CheckpointError, ConversionError
    from MedSAMLiteLib.models.store import ModelError, fetch_weights

    from .checkpoint import CheckpointError as TorchCheckpointError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        weights = args.checkpoint
        if weights is None:
            if args.model != "lite_medsam":
                raise ValueError(f"{args.model}: pass --checkpoint FILE (only lite_medsam has published weights to fetch)")
            weights = fetch_weights("litemedsam", log=lambda m: print(f"medsamlite-torch crosscheck: {m}", file=sys.stderr))
        report = crosscheck(args.model, weights, trust_pickle=args.trust_checkpoint)
    except (ValueError, CheckpointError, ConversionError, ModelError, TorchCheckpointError) as e:
        print(f"medsamlite-torch crosscheck: {e}", file=sys.stderr)
        return 2
    for output, r in report.items():
        verdict = "ok" if r["ok"] else "DIFFERS"
        print(f"{args.model} {output}: max |diff| {r['max_abs_diff']:.3g}, mean {r['mean_abs_diff']:.3g} "
              f"(scale {r['scale']:.3g}) {verdict}")
    return 0 if all(r["ok"] for r in report.values()) else 1
