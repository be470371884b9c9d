"""Export a registry model to two graphs (ONNX, then OpenVINO IR), optionally int8; needs torch.

* encoder: `image` (1, 3, S, S) float32 (the preprocessed image) -> `embedding` (1, 256, 64, 64)
* decoder: `embedding` (1, 256, 64, 64) + `boxes` (N, 4) float32 in prompt space ->
  `low_res_logits` (N, 1, 256, 256) and `iou_predictions` (N, 1); N is dynamic.

The torch modules are traced to ONNX (TorchScript exporter, opset 17); OpenVINO converts the ONNX
files into its IR (saved in float32: no fp16 weight compression). RepViT encoders are fused
(re-parameterised) first. Every new export is checked against torch on a real image before it is
installed in the cache (see `.cache`).
"""
from __future__ import annotations

import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..profiles import PROFILES
from .cache import ONNX_OPSET, ExportError, ExportKey, ensure_export, install, staging_dir, write_manifest

# exported f32 graphs vs torch on a real image: max |diff| <= ATOL + RTOL * max |torch output|
F32_RTOL = 1e-4
F32_ATOL = 1e-4
CALIBRATION_IMAGES = 48


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder for one image embedding and a batch of boxes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        with torch.no_grad():
            self.register_buffer("dense_pe", model.prompt_encoder.get_dense_pe().clone())

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )


def prepare_model(name: str, checkpoint=None, trust_pickle: bool = False, model: nn.Module | None = None) -> nn.Module:
    """The registry model in eval mode, its encoder fused for deployment where it can be."""
    if model is None:
        from ..models import build_model

        model = build_model(name, checkpoint, trust_pickle=trust_pickle)
    encoder = model.image_encoder
    if hasattr(encoder, "fuse"):
        encoder.fuse()
    return model.eval()


def example_inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A real preprocessed image of the model's size and a few boxes (for tracing and checks)."""
    from ..inference.preprocess import preprocess
    from ..profiles import Profile

    try:
        from skimage import data

        image = np.asarray(data.camera())
    except ImportError:  # no scikit-image: a smooth synthetic picture
        yy, xx = np.mgrid[0:300, 0:400]
        image = (127 + 100 * np.sin(xx / 23.0) * np.cos(yy / 17.0)).astype(np.uint8)
    profile = Profile(image_size=size, resize="area", prompt_space=size, propagation="litemedsam", logits_upsample="crop")
    x, _ = preprocess(image, profile)
    s = size / 256
    # three boxes: the decoder must be traced with a batch that is not the embedding's
    boxes = np.array([[60, 70, 180, 200], [20, 30, 120, 110], [100, 90, 240, 250]], np.float32) * s
    return x, np.floor(boxes).astype(np.float32)


def export_onnx(model: nn.Module, folder: Path) -> dict[str, Path]:
    """encoder.onnx and decoder.onnx of a prepared model into `folder`."""
    size = model.spec.profile.image_size
    x, boxes = example_inputs(size)
    decoder = DecoderGraph(model).eval()
    with torch.no_grad():
        embedding = model.image_encoder(torch.from_numpy(x))
    paths = {"encoder": folder / "encoder.onnx", "decoder": folder / "decoder.onnx"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape arithmetic (static here)
        torch.onnx.export(
            model.image_encoder, (torch.from_numpy(x),), str(paths["encoder"]),
            input_names=["image"], output_names=["embedding"], opset_version=ONNX_OPSET, dynamo=False,
        )
        torch.onnx.export(
            decoder, (embedding, torch.from_numpy(boxes)), str(paths["decoder"]),
            input_names=["embedding", "boxes"], output_names=["low_res_logits", "iou_predictions"],
            dynamic_axes={"boxes": {0: "boxes"}, "low_res_logits": {0: "boxes"}, "iou_predictions": {0: "boxes"}},
            opset_version=ONNX_OPSET, dynamo=False,
        )
    return paths


def quantize_encoder(ov_model, profile, count: int = CALIBRATION_IMAGES, log=print):
    """NNCF post-training int8 quantisation, calibrated on real images (`.calibration`)."""
    try:
        import nncf
    except ImportError as e:
        raise ExportError("int8 needs NNCF: pip install nncf") from e
    from .calibration import calibration_images

    try:
        images = calibration_images(profile, count)
    except (ImportError, OSError, RuntimeError) as e:
        raise ExportError(f"int8 calibration images unavailable ({e}); install the samples extra") from e
    log(f"medficient export: int8 calibration on {len(images)} real images...")
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset(images),
        subset_size=len(images),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
    )
    return quantized, {"calibration_images": len(images), "nncf": nncf.__version__, "quantized": ["encoder"]}


def build_export(
    key: ExportKey,
    checkpoint=None,
    trust_pickle: bool = False,
    model: nn.Module | None = None,
    calibration_count: int = CALIBRATION_IMAGES,
    log=print,
) -> Path:
    """Export, check against torch, and install one model+weights+format+precision in the cache."""
    t0 = time.perf_counter()
    log(f"medficient export: {key.model} -> {key.fmt} {key.precision} in {key.directory}")
    model = prepare_model(key.model, checkpoint, trust_pickle, model)
    if key.precision == "bf16":  # the f32 IR, compiled with the bf16 hint: build (or reuse) it first
        f32 = ensure_export(ExportKey(key.model, key.checkpoint_sha256, key.fmt, "f32"), model=model, log=log)
    staging = staging_dir(key)
    try:
        if key.precision == "bf16":
            for name in (*key.files("encoder"), *key.files("decoder")):
                shutil.copyfile(f32 / name, staging / name)
            extra: dict = {"inference_precision": "bf16"}
        else:
            with tempfile.TemporaryDirectory() as tmp:
                onnx_paths = export_onnx(model, Path(tmp))
                extra = {}
                if key.fmt == "onnx":
                    for graph, path in onnx_paths.items():
                        shutil.copyfile(path, staging / key.files(graph)[0])
                else:
                    extra = _to_openvino(onnx_paths, staging, key, model, calibration_count, log)
        extra["check"] = check_against_torch(key, model, staging)
        extra.update(
            medficient=__version__, torch=torch.__version__, python=platform.python_version(),
            image_size=model.spec.profile.image_size, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            fused_encoder=hasattr(model.image_encoder, "fuse"),
        )
        write_manifest(staging, key, extra)
        path = install(staging, key)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"medficient export: done in {time.perf_counter() - t0:.1f} s")
    return path


def _to_openvino(onnx_paths: dict, staging: Path, key: ExportKey, model, calibration_count: int, log) -> dict:
    import openvino as ov

    extra: dict = {"inference_precision": "f32"}
    for graph, path in onnx_paths.items():
        ov_model = ov.convert_model(str(path))
        if graph == "encoder" and key.precision == "int8":
            ov_model, info = quantize_encoder(ov_model, PROFILES[key.model], calibration_count, log)
            extra.update(info)
        ov.save_model(ov_model, str(staging / key.files(graph)[0]), compress_to_fp16=False)
    return extra


def check_against_torch(key: ExportKey, model: nn.Module, folder: Path) -> dict:
    """Run the staged graphs and torch on a real image and boxes; f32 must match within tolerance."""
    from .engines import open_graphs

    x, boxes = example_inputs(model.spec.profile.image_size)
    with torch.no_grad():
        emb_t = model.image_encoder(torch.from_numpy(x))
        logits_t, iou_t = DecoderGraph(model)(emb_t, torch.from_numpy(boxes))
    runner = open_graphs(key, folder, cache=False)
    emb = runner.encode(x)
    logits, iou = runner.decode_full(emb_t.numpy(), boxes)  # the decoder alone, on torch's embedding
    report = {}
    for name, got, want in (("embedding", emb, emb_t), ("low_res_logits", logits, logits_t), ("iou", iou, iou_t)):
        want = want.numpy()
        report[name] = {"max_abs_diff": float(np.abs(got - want).max()), "max_abs": float(np.abs(want).max())}
    if key.precision == "f32":
        for name, r in report.items():
            if r["max_abs_diff"] > F32_ATOL + F32_RTOL * r["max_abs"]:
                raise ExportError(f"exported {name} differs from torch by {r['max_abs_diff']:.3g} (max |value| {r['max_abs']:.3g})")
    return report
