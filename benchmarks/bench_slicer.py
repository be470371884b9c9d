"""Interactive speed and memory in Slicer terms: MedSAMLiteLogic on slicer-core (real MRML), timed
from the Segment call to the mask written into the segment.

Parts (all on TotalSegmentator's CT brain atlas, 179 x 202 x 202, preset brain, an ROI around the
brain over 40 axial slices, as `make demo`):
  clicks  2D Segment per backend: cold (embedding not cached) and a second click on the same slice
          (cached); LiteMedSAM with its genuine weights, the others with rule-weight checkpoints
          imported into a private MEDSAMLITE_HOME (speed does not depend on the values).
  3d      LiteMedSAM 3D through the ROI: cold, the same ROI again (cached), and after `startPrefetch`;
          interleaved with the peer's approach (embed every slice of the volume, then segment): time
          to the first visible result (the middle slice written from `poll`) and to the full result.
  memory  a 300 x 512 x 512 int16 CT (the atlas resampled) with one 3D object (the whole brain), in a
          fresh process: peak RSS, and the embedding cache against its byte setting (default and small).

Usage: .venv/bin/python benchmarks/bench_slicer.py [--parts clicks,3d,memory] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "MedSAMLite" / "Testing"))

import harness
from bench_common import (
    PYTHON,
    import_rule_checkpoints,
    load,
    machine_line,
    median,
    private_home,
)

CLICK_BACKENDS = ("litemedsam", "medficient_l0", "medficient_l1", "repvit_medsam")
POLL_S = 0.01  # the benchmark polls every 10 ms (the panel's timer: every 100 ms)
MiB = 1024 * 1024


class Scene:
    """The CT brain atlas in a fresh MRML scene, a 40-slice ROI around the brain, a segmentation."""

    def __init__(self, module, slices: int = 40):
        import slicer
        from MedSAMLiteLib.headless.samples import brain_mask, ct_brain_atlas_path

        harness.new_scene()
        self.volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(ct_brain_atlas_path()), "CT brain atlas", 0, None)
        brain = brain_mask(slicer.util.arrayFromVolume(self.volume))
        zs = np.flatnonzero(brain.any(axis=(1, 2)))
        lo = (zs[0] + zs[-1]) // 2 - slices // 2
        brain[:lo] = brain[lo + slices:] = False
        self.roi = module.MedSAMLiteTest.roiAroundMask(brain, self.volume, "brain ROI")
        self.whole = module.MedSAMLiteTest.roiAroundMask(np.ones_like(brain), self.volume, "whole volume")
        self.segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "bench")
        self.segmentation.SetReferenceImageGeometryParameterFromVolumeNode(self.volume)
        self.depth = brain.shape[0]


class Timed:
    """Wraps a Logic method to add up the seconds spent in it (the segment writes)."""

    def __init__(self, logic, name: str):
        self.seconds, self._inner = 0.0, getattr(logic, name)
        setattr(logic, name, self)

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self._inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def run_3d(logic, scene, roi=None, segment_id=None):
    """startSegment + poll as the panel does: (seconds to the first write, seconds to done, slices, segment id)."""
    t0 = time.perf_counter()
    run = logic.startSegment(scene.volume, roi or scene.roi, scene.segmentation, preset="brain", segmentId=segment_id, mode="3d")
    first = None
    while not logic.poll(run):
        if first is None and run.writer.written:
            first = time.perf_counter() - t0
        time.sleep(POLL_S)
    return first, time.perf_counter() - t0, run.task.progress.done, run.segmentId


def bench_clicks(module, repeat: int) -> list[str]:
    """2D Segment, cold then the same click again (cached), every backend interleaved per round."""
    logic = module.MedSAMLiteLogic()
    scene = Scene(module)
    writes = Timed(logic, "_write")
    segments = {}
    rows = {b: {"cold": [], "cached": [], "encode": [], "decode": [], "write": []} for b in CLICK_BACKENDS}
    for round_ in range(repeat + 1):  # round 0 warms up (compile, first allocations): not counted
        for backend in CLICK_BACKENDS:
            segmenter = logic.segmenter(backend)
            for kind in ("cold", "cached"):
                if kind == "cold":
                    segmenter.cache.clear()
                stats = segmenter.backend.stats
                enc0, dec0, writes.seconds = stats.encoder_seconds, stats.decoder_seconds, 0.0
                t0 = time.perf_counter()
                segments[backend] = logic.segment(scene.volume, scene.roi, scene.segmentation, backend=backend, preset="brain",
                                                  segmentId=segments.get(backend), mode="2d")
                seconds = time.perf_counter() - t0
                if round_:
                    rows[backend][kind].append(seconds)
                    if kind == "cached":
                        rows[backend]["decode"].append(stats.decoder_seconds - dec0)
                        rows[backend]["write"].append(writes.seconds)
                    else:
                        rows[backend]["encode"].append(stats.encoder_seconds - enc0)
    out = [(f"2D Segment on the ROI's middle slice of the CT atlas (mode 2d, preset brain), median of {repeat} rounds, "
           "backends interleaved in each round, `logic.segment` (blocking: no poll-timer delay):"), "",
           "| backend | cold 2D (s) | of which encoder (s) | second click, cached (s) | of which decoder (s) | of which segment write (s) |",
           "|---|---|---|---|---|---|"]
    for backend, r in rows.items():
        out.append(f"| {backend} | {median(r['cold']):.3f} | {median(r['encode']):.3f} | {median(r['cached']):.3f} | "
                   f"{median(r['decode']):.3f} | {median(r['write']):.3f} |")
    return out


def bench_3d(module, repeat: int) -> list[str]:
    """LiteMedSAM 3D: cold, cached, prefetched, and the peer's whole-volume-first approach, interleaved."""
    logic = module.MedSAMLiteLogic()
    scene = Scene(module)
    segmenter = logic.segmenter("litemedsam")
    cache = segmenter.cache
    results = {k: [] for k in ("cold", "cached", "prefetched", "peer")}
    segment_id = None
    run_3d(logic, scene)  # warm-up (compile, allocations): not counted
    for round_ in range(repeat):
        cache.clear()
        first, full, slices, segment_id = run_3d(logic, scene, segment_id=segment_id)
        results["cold"].append((first, full, slices))
        results["cached"].append(run_3d(logic, scene, segment_id=segment_id)[:3])
        cache.clear()
        logic.startPrefetch(scene.volume, scene.roi, preset="brain").wait()
        results["prefetched"].append(run_3d(logic, scene, segment_id=segment_id)[:3])
        if round_ == 0:  # the peer once: it embeds all slices (the slowest part of this benchmark)
            cache.clear()
            default = cache.max_bytes
            cache.resize(max(default, (scene.depth + 1) * 4 * MiB))  # the peer keeps every slice's embedding
            t0 = time.perf_counter()
            logic.startPrefetch(scene.volume, scene.whole, preset="brain").wait()
            embedded = time.perf_counter() - t0
            first, full, slices, _ = run_3d(logic, scene, segment_id=segment_id)
            results["peer"].append((embedded + first, embedded + full, slices))
            cache.resize(default)

    def med(kind, i):
        return median([r[i] for r in results[kind]])

    slices = results["cold"][0][2]
    cold, cached, pre = med("cold", 1), med("cached", 1), med("prefetched", 1)
    peer_first, peer_full = med("peer", 0), med("peer", 1)
    ours_first = med("cold", 0)
    return [
        (f"LiteMedSAM 3D through the 40-slice ROI ({slices} slices visited, stop after 3 empty slices), CT atlas "
        f"{scene.depth} slices, `startSegment` + `poll` every {int(POLL_S * 1000)} ms, median of {repeat} interleaved rounds "
        "(the peer once):"), "",
        "| run | first visible result (s) | full result (s) | per slice (s) |", "|---|---|---|---|",
        f"| cold (nothing cached) | {ours_first:.2f} | {cold:.2f} | {cold / slices:.3f} |",
        f"| same ROI again (cached) | {med('cached', 0):.2f} | {cached:.2f} | {cached / slices:.3f} |",
        f"| after `startPrefetch` finished | {med('prefetched', 0):.2f} | {pre:.2f} | {pre / slices:.3f} |",
        f"| peer: embed all {scene.depth} slices, then segment | {peer_first:.2f} | {peer_full:.2f} | {peer_full / slices:.3f} |",
        "", (f"cached vs cold: {cold / cached:.1f}x faster; peer / ours: first result {peer_first / ours_first:.1f}x, "
        f"full result {peer_full / cold:.1f}x"),
    ]


# -- memory: a fresh process per setting ---------------------------------------------------------------
def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). `getrusage`'s ru_maxrss is not used for it: on Linux
    it keeps the parent's peak across fork and exec, so a child of a big process reports the parent's."""
    return _status_mib("VmHWM")


def large_ct_scene(slices: int | None):
    """A fresh scene with the CT atlas resampled to 300 x 512 x 512 int16, an ROI around the brain
    (`slices` around its middle, or all of it) and a segmentation: (module, volume, roi, seg, ROI slices)."""
    import SimpleITK as sitk
    import slicer
    from MedSAMLiteLib.headless.samples import brain_mask, ct_brain_atlas_path
    from scipy import ndimage

    module = harness.load_module()
    harness.new_scene()
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(ct_brain_atlas_path())))  # (179, 202, 202) int16
    factors = np.array((300, 512, 512)) / hu.shape
    big = ndimage.zoom(hu, factors, order=1, output=np.int16, grid_mode=True, mode="nearest")
    k, j, i = (np.flatnonzero(brain_mask(hu).any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    lo = np.floor(np.array([i[0], j[0], k[0]]) * factors[::-1])
    hi = np.ceil((np.array([i[-1], j[-1], k[-1]]) + 1) * factors[::-1]) - 1
    if slices:  # a slab of `slices` around the middle
        mid = (lo[2] + hi[2]) // 2
        lo[2], hi[2] = mid - slices // 2, mid - slices // 2 + slices - 1
    spacing = 1.0 / factors[::-1]  # (i, j, k) mm
    volume = slicer.util.addVolumeFromArray(big, ijkToRAS=np.diag([*spacing, 1.0]), name="CT 300x512x512")
    del big, hu
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "brain")
    roi.SetCenter(*((lo + hi) / 2 * spacing))
    roi.SetSize(*((hi - lo) * spacing))
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "bench")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return module, volume, roi, segmentation, int(hi[2] - lo[2] + 1)


def memory_child(cache_bytes: int | None, slices: int | None) -> dict:
    """In a fresh process: a 300 x 512 x 512 int16 CT in MRML, one 3D object, LiteMedSAM; peak RSS."""
    module, volume, roi, segmentation, roi_slices = large_ct_scene(slices)
    logic = module.MedSAMLiteLogic()
    cache = logic.segmenter("litemedsam").cache
    if cache_bytes:
        cache.resize(cache_bytes)
    t0 = time.perf_counter()
    run = logic.startSegment(volume, roi, segmentation, preset="brain", mode="3d")
    most = 0
    while not logic.poll(run):
        most = max(most, cache.nbytes)
        time.sleep(POLL_S)
    most = max(most, cache.nbytes)
    return {"seconds": time.perf_counter() - t0, "slices": run.task.progress.done, "roi_slices": roi_slices,
            "peak_rss_mib": peak_rss_mib(), "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cache_mib": cache.nbytes / MiB, "cache_max_seen_mib": most / MiB, "cache_limit_mib": cache.max_bytes / MiB,
            "cached": len(cache), "within": bool(cache.nbytes <= cache.max_bytes and most <= cache.max_bytes)}


def memory_stages_child() -> list:
    """The memory profile: RSS and peak after each stage of one 3D Segment (3-slice ROI), the Logic's
    steps called one by one (prepare, run, write) as `startSegment` and `poll` call them."""
    import tracemalloc

    import slicer  # noqa: F401 (slicer-core and VTK loaded)

    stages = []

    def note(stage, traced=None):
        stages.append([stage, _status_mib("VmRSS"), _status_mib("VmHWM"), traced])

    note("slicer-core imported")
    module, volume, roi, segmentation, _ = large_ct_scene(3)
    note("scene with the 300 x 512 x 512 int16 volume")
    logic = module.MedSAMLiteLogic()
    logic.segmenter("litemedsam")
    note("LiteMedSAM compiled")
    tracemalloc.start()
    job = logic.prepare(volume, roi, segmentation, preset="brain", mode="3d")
    note("prepare (volume copy, preset)", tracemalloc.get_traced_memory()[1] / MiB)
    tracemalloc.reset_peak()
    mask = logic.run(job)
    note("run (3 slices)", tracemalloc.get_traced_memory()[1] / MiB)
    tracemalloc.reset_peak()
    logic._write(module.SegmentRun(job, task=None), mask)
    note("write into the segment", tracemalloc.get_traced_memory()[1] / MiB)
    return stages


def bench_memory() -> list[str]:
    rows = []
    for cache_bytes, slices in ((None, None), (32 * MiB, 40)):
        args = [PYTHON, __file__, "--memory-child", json.dumps([cache_bytes, slices])]
        proc = subprocess.run(args, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    proc = subprocess.run([PYTHON, __file__, "--memory-child", "stages"], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    stages = json.loads(proc.stdout.strip().splitlines()[-1])
    out = [("300 x 512 x 512 int16 CT (the atlas resampled; 150 MiB as int16) in MRML, one 3D object, LiteMedSAM, "
           "a fresh process each; peak RSS = VmHWM (ru_maxrss, which includes the parent benchmark's peak, in brackets):"), "",
           "| cache setting (MiB) | ROI slices | slices segmented | seconds | peak RSS (MiB) | cache after / most seen (MiB) | embeddings kept | cache within its setting |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['cache_limit_mib']:.0f} | {r['roi_slices']} | {r['slices']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} ({r['ru_maxrss_mib']:.0f}) | "
                   f"{r['cache_mib']:.0f} / {r['cache_max_seen_mib']:.0f} | {r['cached']} | {'yes' if r['within'] else 'NO'} |")
    out += ["", "Memory profile of one 3D Segment on the same volume (3-slice ROI; fresh process; numpy peak by tracemalloc):", "",
            "| after | RSS (MiB) | peak RSS so far (MiB) | numpy peak in the step (MiB) |", "|---|---|---|---|"]
    out += [f"| {stage} | {rss:.0f} | {peak:.0f} | {'' if traced is None else f'{traced:.0f}'} |" for stage, rss, peak, traced in stages]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="clicks,3d,memory", help="comma-separated: clicks, 3d, memory")
    ap.add_argument("--repeat", type=int, default=5, help="rounds of the 2D clicks (3D: 2 rounds)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        stages = args.memory_child == "stages"
        print(json.dumps(memory_stages_child() if stages else memory_child(*json.loads(args.memory_child))))
        return 0

    module = harness.load_module()
    print(machine_line(sys.orig_argv) + "\n")
    parts = args.parts.split(",")
    with private_home():
        if "clicks" in parts:
            import_rule_checkpoints([b for b in CLICK_BACKENDS if b != "litemedsam"])
        for name, part in (("clicks", lambda: bench_clicks(module, args.repeat)), ("3d", lambda: bench_3d(module, 2)),
                           ("memory", bench_memory)):
            if name in parts:
                before, t0 = load(), time.perf_counter()
                lines = part()
                print("\n".join(lines))
                print(f"\n({name}: {time.perf_counter() - t0:.0f} s; load average before {before}, after {load()})\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
