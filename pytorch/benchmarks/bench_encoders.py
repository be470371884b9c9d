"""Image encoder per slice, every backend: the extension's OpenVINO graph (f32, bf16) against PyTorch
eager of the same network and weights (f32, bf16 autocast), with each network's GFLOP and the share
of the CPU's f32 peak it reaches; then a per-layer-type profile and configuration trials of LiteMedSAM.

Weights: the reference rule weights of each network (speed does not depend on the values), fed to
the torch registry model and to the torch-free converter (`MedSAMLiteLib.models.conversion.convert`).
Input: scikit-image's camera man preprocessed for each network's profile. torch threads = OpenVINO
threads = --threads. GFLOP: `torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix
products, 2 FLOP per multiply-add; element-wise work is not counted).

Usage: .venv/bin/python pytorch/benchmarks/bench_encoders.py [--threads 2] [--repeat 5] [--ghz 2.6]
"""
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from MedSAMLiteLib.models.conversion import convert
from MedSAMLiteLib.models.conversion.ops import compile_model
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "MedSAMLite" / "Testing" / "tests"))

from bench_common import REGISTRY_NAMES, cpu_model, load, machine_line, median
from medsamlite_torch.crosscheck import _torch_model, example_inputs
from medsamlite_torch.models import build_model
from reference import rule_value

SLOW = {"medsam_vit_b"}  # ViT-B at 1024: fewer repeats


def rule_weights(registry_name: str) -> dict[str, np.ndarray]:
    state = build_model(registry_name, pretrained=False).state_dict()
    return {k: rule_value(k, tuple(v.shape)) for k, v in state.items()}


def gflop(encoder, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(x)
    return counter.get_total_flops() / 1e9


def interleaved(calls: dict, repeat: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each variant, variants interleaved so load changes hit all."""
    times = collections.defaultdict(list)
    for i in range(warmup + repeat):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: median(t) for name, t in times.items()}


_CLOCK_PROBE = r"""
#include <stdio.h>
#include <time.h>
int main(void) {  /* a chain of dependent 1-cycle adds: iterations per second = the core clock */
    struct timespec a, b; long n = 1000000000L, x = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) __asm__ volatile("add $1, %0" : "+r"(x));
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%f\n", n / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9) / 1e9);
    return x != n;
}
"""


def clock_ghz() -> tuple[float, str]:
    """(GHz, how): the running clock from a dependent-add loop (lscpu's MHz is the base/TSC clock
    under a hypervisor; cores boost above it); lscpu's 'cpu MHz' if no C compiler is found."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler:
        with tempfile.TemporaryDirectory() as tmp:
            source, binary = Path(tmp) / "clock.c", Path(tmp) / "clock"
            source.write_text(_CLOCK_PROBE)
            if subprocess.run([compiler, "-O1", str(source), "-o", str(binary)], check=False, capture_output=True).returncode == 0:
                return max(float(subprocess.run([str(binary)], check=False, capture_output=True, text=True).stdout) for _ in range(3)), "measured"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1]) / 1000, "lscpu"
    raise RuntimeError("no clock: pass --ghz")


def gemm_gflops(threads: int, precision: str, n: int = 2048, repeat: int = 10) -> float:
    """Achieved GEMM rate of one OpenVINO MatMul (n x n x n): the practical ceiling for these networks."""
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    a = ops.parameter([n, n], np.float32)
    model = ov.Model([ops.matmul(a, ops.constant(rng.random((n, n), dtype=np.float32)), False, False)], [a])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    x = rng.random((n, n), dtype=np.float32)
    request.infer({0: x})
    t0 = time.perf_counter()
    for _ in range(repeat):
        request.infer({0: x})
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e9


def bench_backends(backends, threads, repeat, peak) -> list[str]:
    rows = ["| backend | input | GFLOP | OV f32 (ms) | OV bf16 (ms) | torch f32 (ms) | torch bf16 (ms) | torch/OV f32 | f32/bf16 (OV) | OV f32 % of peak | OV bf16 GFLOP/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(rows), flush=True)
    for backend in backends:
        name = REGISTRY_NAMES[backend]
        weights = rule_weights(name)
        model = _torch_model(name, weights, trust_pickle=False)
        x_np, _ = example_inputs(model.spec.profile)
        x = torch.from_numpy(x_np)
        encoder_graph, _ = convert(model.spec.architecture, weights)
        requests = {p: compile_model(encoder_graph, threads=threads, precision=p).create_infer_request() for p in ("f32", "bf16")}
        flops = gflop(model.image_encoder, x)

        def torch_call(bf16: bool, encoder=model.image_encoder, x=x):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return encoder(x)

        def ov_call(precision: str, requests=requests, x=x_np):
            return requests[precision].infer({0: x})

        calls = {"OV f32": lambda: ov_call("f32"), "OV bf16": lambda: ov_call("bf16"),
                 "torch f32": lambda: torch_call(False), "torch bf16": lambda: torch_call(True)}
        slow = backend in SLOW
        t = interleaved(calls, repeat=2 if slow else repeat, warmup=1 if slow else 2)
        rows.append(f"| {backend} | {x.shape[-1]} | {flops:.1f} | {1000 * t['OV f32']:.0f} | {1000 * t['OV bf16']:.0f} | "
                    f"{1000 * t['torch f32']:.0f} | {1000 * t['torch bf16']:.0f} | {t['torch f32'] / t['OV f32']:.2f} | "
                    f"{t['OV f32'] / t['OV bf16']:.2f} | {100 * flops / t['OV f32'] / peak:.0f} % | {flops / t['OV bf16']:.0f} |")
        print(rows[-1], flush=True)
    return rows


def lite_graph():
    weights = rule_weights("lite_medsam")
    x, boxes = example_inputs(build_model("lite_medsam", pretrained=False).spec.profile)
    encoder, decoder = convert("litemedsam", weights)
    return encoder, decoder, x, boxes[:1]


def profile_litemedsam(threads: int, runs: int = 5) -> list[str]:
    """OpenVINO per-layer counters of the LiteMedSAM f32 encoder, summed by executed layer type."""
    graph, _, x, _ = lite_graph()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True}
    request = ov.Core().compile_model(graph, "CPU", config).create_infer_request()
    request.infer({0: x})
    by_type, total = collections.Counter(), 0.0
    for _ in range(runs):
        request.infer({0: x})
        for layer in request.profiling_info:
            seconds = layer.real_time.total_seconds()
            by_type[f"{layer.node_type} ({layer.exec_type})"] += seconds / runs
            total += seconds / runs
    rows = [f"Per-layer counters (`PERF_COUNT`), LiteMedSAM f32, mean of {runs} calls, total {1000 * total:.0f} ms of layer time:", "",
            "| layer type (kernel) | ms | share |", "|---|---|---|"]
    for kind, seconds in by_type.most_common(10):
        rows.append(f"| {kind} | {1000 * seconds:.1f} | {100 * seconds / total:.0f} % |")
    return rows


def config_trials(threads: int, repeat: int) -> list[str]:
    """LiteMedSAM f32 encoder latency under other CPU plugin settings, interleaved; and compile time
    without and with the compiled-model cache."""
    graph, decoder, x, box = lite_graph()
    base = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    trials = {
        "LATENCY hint (the backend's setting, threads: plugin default)": {},
        f"+ INFERENCE_NUM_THREADS={threads}": {"INFERENCE_NUM_THREADS": threads},
        "+ INFERENCE_NUM_THREADS=1": {"INFERENCE_NUM_THREADS": 1},
        "+ NUM_STREAMS=1, ENABLE_CPU_PINNING=True": {"NUM_STREAMS": 1, "ENABLE_CPU_PINNING": True},
        "+ ENABLE_CPU_PINNING=False": {"ENABLE_CPU_PINNING": False},
        "+ CPU_DENORMALS_OPTIMIZATION=True": {"CPU_DENORMALS_OPTIMIZATION": True},
        "THROUGHPUT hint (one request)": {"PERFORMANCE_HINT": "THROUGHPUT"},
    }
    core = ov.Core()
    requests = {name: core.compile_model(graph, "CPU", {**base, **extra}).create_infer_request() for name, extra in trials.items()}
    t = interleaved({name: (lambda r=r: r.infer({0: x})) for name, r in requests.items()}, repeat=repeat, warmup=2)
    rows = [f"LiteMedSAM f32 encoder under CPU plugin settings (median of {repeat}, interleaved):", "",
            "| setting | ms | vs the backend's |", "|---|---|---|"]
    first = next(iter(t.values()))
    rows += [f"| {name} | {1000 * s:.0f} | {s / first:.2f} |" for name, s in t.items()]
    static = decoder.clone()
    static.reshape({"boxes": [1, 4]})
    embedding = requests[next(iter(trials))].get_output_tensor(0).data.copy()
    decoders = {"dynamic box count [?, 4]": decoder, "static [1, 4] (the backend's one-box decoder)": static}
    decoders = {name: core.compile_model(m, "CPU", base).create_infer_request() for name, m in decoders.items()}
    t = interleaved({name: (lambda r=r: r.infer({0: embedding, 1: box})) for name, r in decoders.items()}, repeat=4 * repeat, warmup=3)
    rows += ["", f"LiteMedSAM decoder, one box (median of {4 * repeat}, interleaved):", "", "| decoder input | ms |", "|---|---|"]
    rows += [f"| {name} | {1000 * s:.1f} |" for name, s in t.items()]
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "encoder.xml"
        ov.save_model(graph, str(xml), compress_to_fp16=False)
        seconds = []
        for cache in (None, Path(tmp) / "cache", Path(tmp) / "cache"):  # no cache; cache filled; cache used
            core = ov.Core()
            if cache:
                core.set_property({"CACHE_DIR": str(cache)})
            t0 = time.perf_counter()
            core.compile_model(str(xml), "CPU", base)
            seconds.append(time.perf_counter() - t0)
    rows += ["", (f"Compile from the saved IR: {seconds[0]:.2f} s without the compiled-model cache, {seconds[1]:.2f} s filling it, "
             f"{seconds[2]:.2f} s loading from it. Shapes are static already (encoder input (1, 3, S, S)).")]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch and OpenVINO threads")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per variant (ViT-B: 2)")
    ap.add_argument("--ghz", type=float, help="core clock for the peak estimate (default: measured, see clock_ghz)")
    ap.add_argument("--flop-per-cycle", type=int, default=64,
                    help="f32 FLOP per cycle per core: 64 = two 512-bit FMA pipes (Zen 5, Intel server cores), "
                         "32 = two 256-bit pipes (Zen 4 runs AVX-512 on them)")
    ap.add_argument("--backends", default=",".join(REGISTRY_NAMES), help="comma-separated backends")
    ap.add_argument("--parts", default="backends,profile,config", help="comma-separated: backends, profile, config")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    print(machine_line(sys.orig_argv) + f", torch {torch.__version__}, threads {args.threads}\n")
    before, t0 = load(), time.perf_counter()
    ghz, how = (args.ghz, "given") if args.ghz else clock_ghz()
    peak = args.threads * ghz * args.flop_per_cycle
    gemm = {p: gemm_gflops(args.threads, p) for p in ("f32", "bf16")}
    print(f"{cpu_model()}: clock {ghz:.2f} GHz ({how}); f32 peak estimate {args.threads} cores x {ghz:.2f} GHz x "
          f"{args.flop_per_cycle} FLOP/cycle = {peak:.0f} GFLOP/s (bf16 dot products: twice that); one OpenVINO MatMul "
          f"2048^3 reaches {gemm['f32']:.0f} GFLOP/s f32 ({100 * gemm['f32'] / peak:.0f} % of the peak) and {gemm['bf16']:.0f} bf16\n")
    if "backends" in parts:
        print(f"Encoder per slice, median of {args.repeat} calls (ViT-B 2) after warm-up, the four variants interleaved:\n")
        bench_backends(args.backends.split(","), args.threads, args.repeat, peak)
    if "profile" in parts:
        print("\n" + "\n".join(profile_litemedsam(args.threads)))
    if "config" in parts:
        print("\n" + "\n".join(config_trials(args.threads, args.repeat)))
    print(f"\n({time.perf_counter() - t0:.0f} s; load average before {before}, after {load()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
