"""Interactive speed and memory in Slicer terms: MedSAMLiteLogic on slicer-core (real MRML) driving its
engine process as the panel does (`startSegment`, then `poll` from a timer), timed from the Segment call
to the mask written into the segment.

Parts:
  clicks    2D Segment per backend on TotalSegmentator's CT brain atlas (179 x 202 x 202, preset brain,
            the ROI's middle slice): cold (embeddings cleared) and a second click (cached); LiteMedSAM
            with its genuine weights, the others with rule-weight checkpoints imported into a private
            MEDSAMLITE_HOME (speed does not depend on the values).
  3d        LiteMedSAM 3D through a 40-slice ROI on the atlas: cold, the same ROI again, after
            `startPrefetch`; and the peer's approach (embed every slice of the volume, then segment).
  realsize  a 400 x 512 x 512 int16 CT (the atlas resampled): cached 2D click, the longest single
            main-thread call (startSegment or poll) over a cold 2D click and a 40-slice 3D run, 3D cold /
            same ROI again / after prefetch per slice, and a 3D run whose main thread idles holding the
            GIL between polls (as Slicer's Qt idle does) against one whose idle releases it.
  memory    a 300 x 512 x 512 int16 CT with one 3D object (the whole brain), in a fresh process: how much
            the Slicer-side process grows during the run, and the engine's peak RSS.

Usage: .venv/bin/python benchmarks/bench_slicer.py [--parts clicks,3d,realsize,memory] [--repeat 5]
"""
from __future__ import annotations

import argparse
import ctypes
import json
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
POLL_S = 0.01  # timings: poll every 10 ms (the panel's timer: every 100 ms, which a user sees on top)
PANEL_POLL_S = 0.1  # the panel's timer, for the main-thread and GIL figures
MiB = 1024 * 1024
_libc = ctypes.PyDLL(None)  # PyDLL keeps the GIL during the call: Slicer's Qt idle as PythonQt runs it


def idle_holding_gil(seconds: float) -> None:
    _libc.usleep(int(seconds * 1e6))


class MainThread:
    """Wraps the Logic's main-thread entry points (startSegment, poll) to time every single call."""

    def __init__(self, logic):
        self.calls: list[float] = []
        for name in ("startSegment", "poll"):
            setattr(logic, name, self._timed(getattr(logic, name)))

    def _timed(self, inner):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.calls.append(time.perf_counter() - t0)

        return call

    def take(self) -> tuple[float, float]:
        """(longest call, sum of calls) since the last take."""
        calls, self.calls = self.calls, []
        return max(calls, default=0.0), sum(calls)


def drive(logic, args: dict, poll_s: float = POLL_S, idle=time.sleep) -> dict:
    """startSegment + poll as the panel does: seconds to the first write (3D: the middle slice), to done."""
    t0 = time.perf_counter()
    run = logic.startSegment(**args)
    first = None
    while not logic.poll(run):
        if first is None and run.writer.written:
            first = time.perf_counter() - t0
        idle(poll_s)
    return {"first": first, "seconds": time.perf_counter() - t0, "slices": run.task.progress.done, "segmentId": run.segmentId}


def clear_embeddings(logic) -> None:
    logic.engine().call("embeddings", clear=True)


def stats(logic, backend: str) -> dict:
    return logic.engine().call("stats", backend=backend)["backend"]


def prefetch(logic, volume, roi, preset="brain") -> float:
    t0 = time.perf_counter()
    task = logic.startPrefetch(volume, roi, preset=preset)
    task.wait()
    assert task.state == task.DONE, task.error
    return time.perf_counter() - t0


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

    def args(self, **kwargs) -> dict:
        return dict(volumeNode=self.volume, roiNode=self.roi, segmentationNode=self.segmentation, preset="brain", **kwargs)


def bench_clicks(module, repeat: int) -> list[str]:
    """2D Segment, cold then the same click again (cached), every backend interleaved per round."""
    logic = module.MedSAMLiteLogic()
    scene = Scene(module)
    main = MainThread(logic)
    segments = {}
    rows = {b: {"cold": [], "cached": [], "encode": [], "decode": [], "main": []} for b in CLICK_BACKENDS}
    for round_ in range(repeat + 1):  # round 0 warms up (engine start, model load, upload): not counted
        for backend in CLICK_BACKENDS:
            for kind in ("cold", "cached"):
                if kind == "cold":
                    clear_embeddings(logic)
                before = stats(logic, backend) if round_ else None
                main.take()
                r = drive(logic, scene.args(backend=backend, segmentId=segments.get(backend), mode="2d"))
                segments[backend] = r["segmentId"]
                if round_:
                    after = stats(logic, backend)
                    rows[backend][kind].append(r["seconds"])
                    if kind == "cached":
                        rows[backend]["decode"].append(after["decoder_seconds"] - before["decoder_seconds"])
                        rows[backend]["main"].append(main.take()[1])
                    else:
                        rows[backend]["encode"].append(after["encoder_seconds"] - before["encoder_seconds"])
    out = [(f"2D Segment on the ROI's middle slice of the CT atlas (mode 2d, preset brain), median of {repeat} rounds, "
           f"backends interleaved in each round, `startSegment` + `poll` every {int(POLL_S * 1000)} ms:"), "",
           "| backend | cold 2D (s) | of which encoder (s) | second click, cached (s) | of which decoder (s) | of which main thread (s) |",
           "|---|---|---|---|---|---|"]
    for backend, r in rows.items():
        out.append(f"| {backend} | {median(r['cold']):.3f} | {median(r['encode']):.3f} | {median(r['cached']):.3f} | "
                   f"{median(r['decode']):.3f} | {median(r['main']):.3f} |")
    return out


def bench_3d(module, repeat: int) -> list[str]:
    """LiteMedSAM 3D: cold, cached, prefetched, and the peer's whole-volume-first approach, interleaved."""
    logic = module.MedSAMLiteLogic()
    scene = Scene(module)
    results = {k: [] for k in ("cold", "cached", "prefetched", "peer")}
    segment_id = drive(logic, scene.args(mode="3d"))["segmentId"]  # warm-up: not counted
    for round_ in range(repeat):
        clear_embeddings(logic)
        results["cold"].append(drive(logic, scene.args(mode="3d", segmentId=segment_id)))
        results["cached"].append(drive(logic, scene.args(mode="3d", segmentId=segment_id)))
        clear_embeddings(logic)
        prefetch(logic, scene.volume, scene.roi)
        results["prefetched"].append(drive(logic, scene.args(mode="3d", segmentId=segment_id)))
        if round_ == 0:  # the peer once: it embeds all slices (the slowest part of this benchmark)
            clear_embeddings(logic)
            default = logic.engine().call("embeddings")["max_bytes"]
            logic.engine().call("embeddings", max_bytes=max(default, (scene.depth + 1) * 4 * MiB))  # every slice kept
            embedded = prefetch(logic, scene.volume, scene.whole)
            r = drive(logic, scene.args(mode="3d", segmentId=segment_id))
            results["peer"].append({"first": embedded + r["first"], "seconds": embedded + r["seconds"], "slices": r["slices"]})
            logic.engine().call("embeddings", max_bytes=default)

    def med(kind, key):
        return median([r[key] for r in results[kind]])

    slices = results["cold"][0]["slices"]
    cold, cached, pre = med("cold", "seconds"), med("cached", "seconds"), med("prefetched", "seconds")
    peer_first, peer_full = med("peer", "first"), med("peer", "seconds")
    ours_first = med("cold", "first")
    return [
        (f"LiteMedSAM 3D through the 40-slice ROI ({slices} slices visited, stop after 3 empty slices), CT atlas "
        f"{scene.depth} slices, `startSegment` + `poll` every {int(POLL_S * 1000)} ms, median of {repeat} interleaved rounds "
        "(the peer once):"), "",
        "| run | first visible result (s) | full result (s) | per slice (s) |", "|---|---|---|---|",
        f"| cold (nothing cached) | {ours_first:.2f} | {cold:.2f} | {cold / slices:.3f} |",
        f"| same ROI again (cached) | {med('cached', 'first'):.2f} | {cached:.2f} | {cached / slices:.3f} |",
        f"| after `startPrefetch` finished | {med('prefetched', 'first'):.2f} | {pre:.2f} | {pre / slices:.3f} |",
        f"| peer: embed all {scene.depth} slices, then segment | {peer_first:.2f} | {peer_full:.2f} | {peer_full / slices:.3f} |",
        "", (f"cached vs cold: {cold / cached:.1f}x faster; peer / ours: first result {peer_first / ours_first:.1f}x, "
        f"full result {peer_full / cold:.1f}x"),
    ]


# -- real-size volumes -------------------------------------------------------------------------------------
def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def large_ct_scene(shape: tuple[int, int, int], slices: int | None):
    """A fresh scene with the CT atlas resampled to `shape` int16 (k, j, i), an ROI around the brain
    (`slices` around its middle, or all of it) and a segmentation: (module, volume, roi, seg, ROI slices)."""
    module = harness.load_module()  # first: it puts this checkout's MedSAMLiteLib ahead of an installed one
    import SimpleITK as sitk
    import slicer
    from MedSAMLiteLib.headless.samples import brain_mask, ct_brain_atlas_path
    from scipy import ndimage

    harness.new_scene()
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(ct_brain_atlas_path())))  # (179, 202, 202) int16
    factors = np.array(shape) / hu.shape
    big = ndimage.zoom(hu, factors, order=1, output=np.int16, grid_mode=True, mode="nearest")
    k, j, i = (np.flatnonzero(brain_mask(hu).any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    lo = np.floor(np.array([i[0], j[0], k[0]]) * factors[::-1])
    hi = np.ceil((np.array([i[-1], j[-1], k[-1]]) + 1) * factors[::-1]) - 1
    if slices:  # a slab of `slices` around the middle
        mid = (lo[2] + hi[2]) // 2
        lo[2], hi[2] = mid - slices // 2, mid - slices // 2 + slices - 1
    spacing = 1.0 / factors[::-1]  # (i, j, k) mm
    volume = slicer.util.addVolumeFromArray(big, ijkToRAS=np.diag([*spacing, 1.0]), name="CT " + "x".join(map(str, shape)))
    del big, hu
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "brain")
    roi.SetCenter(*((lo + hi) / 2 * spacing))
    roi.SetSize(*((hi - lo) * spacing))
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "bench")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return module, volume, roi, segmentation, int(hi[2] - lo[2] + 1)


def bench_realsize(repeat: int) -> list[str]:
    """400 x 512 x 512: clicks, the longest main-thread call, 3D cold/cached/prefetched, GIL-holding idle."""
    from MedSAMLiteLib.engine import client as engine_client

    module, volume, roi, segmentation, roi_slices = large_ct_scene((400, 512, 512), 40)
    engine_client.shared().stop()  # the first click below starts the engine and loads the model
    logic = module.MedSAMLiteLogic()
    main = MainThread(logic)
    args = dict(volumeNode=volume, roiNode=roi, segmentationNode=segmentation, preset="brain")
    first = drive(logic, dict(args, mode="2d"))  # engine start, model load, the volume into shared memory
    first_longest = main.take()[0]
    segment_id = first["segmentId"]
    rows = {k: [] for k in ("cold2d", "cached2d", "cold3d", "cached3d", "prefetched3d", "gil3d", "nogil3d")}
    longest = {k: [] for k in ("cold2d", "cold3d")}
    for _ in range(repeat):
        clear_embeddings(logic)
        rows["cold2d"].append(drive(logic, dict(args, mode="2d", segmentId=segment_id)))
        longest["cold2d"].append(main.take()[0])
        rows["cached2d"].append(drive(logic, dict(args, mode="2d", segmentId=segment_id)))
        main.take()
        clear_embeddings(logic)
        rows["cold3d"].append(drive(logic, dict(args, mode="3d", segmentId=segment_id)))
        longest["cold3d"].append(main.take()[0])
        rows["cached3d"].append(drive(logic, dict(args, mode="3d", segmentId=segment_id)))
        clear_embeddings(logic)
        prefetch(logic, volume, roi)
        rows["prefetched3d"].append(drive(logic, dict(args, mode="3d", segmentId=segment_id)))
        for kind, idle in (("gil3d", idle_holding_gil), ("nogil3d", time.sleep)):  # both cold, the panel's 100 ms timer
            clear_embeddings(logic)
            rows[kind].append(drive(logic, dict(args, mode="3d", segmentId=segment_id), PANEL_POLL_S, idle))
        main.take()

    def med(kind, key="seconds"):
        return median([r[key] for r in rows[kind]])

    slices = rows["cold3d"][0]["slices"]
    gil, nogil = med("gil3d"), med("nogil3d")
    cold, cached, pre = med("cold3d"), med("cached3d"), med("prefetched3d")
    return [
        (f"400 x 512 x 512 int16 CT (the atlas resampled, 200 MiB), preset brain, LiteMedSAM, ROI of {roi_slices} slices "
         f"around the brain's middle; `startSegment` + `poll` every {int(POLL_S * 1000)} ms unless said; median of {repeat} "
         "interleaved rounds (cold = embeddings cleared in the engine):"), "",
        "| figure | measured | target |", "|---|---|---|",
        f"| cached 2D click, start to mask in the segment | {med('cached2d'):.3f} s | <= 0.10 s |",
        f"| cold 2D click, start to mask in the segment | {med('cold2d'):.3f} s | |",
        f"| longest single main-thread call, cold 2D click | {max(longest['cold2d']):.3f} s | <= 0.20 s |",
        f"| longest single main-thread call, {slices}-slice 3D run (cold) | {max(longest['cold3d']):.3f} s | <= 0.20 s |",
        f"| first click of the session (engine start, model load, volume upload): total / longest call | "
        f"{first['seconds']:.2f} s / {first_longest:.3f} s | |",
        f"| 3D cold, per slice ({slices} slices) | {cold / slices:.3f} s | <= 0.5 s |",
        f"| 3D same ROI again: per slice, speed-up | {cached / slices:.3f} s, {cold / cached:.1f}x | >= 5x |",
        f"| 3D after `startPrefetch` finished, per slice | {pre / slices:.3f} s | <= 0.05 s |",
        f"| 3D cold, poll every 100 ms, idle holding the GIL / releasing it | {gil:.2f} s / {nogil:.2f} s = {gil / nogil:.2f}x | <= 1.25x |",
    ]


def memory_child(cache_bytes: int | None, slices: int | None) -> dict:
    """In a fresh process: a 300 x 512 x 512 int16 CT in MRML, one 3D object, LiteMedSAM: how much this
    (Slicer's) process grows during the run, and the engine's peak RSS."""
    module, volume, roi, segmentation, roi_slices = large_ct_scene((300, 512, 512), slices)
    logic = module.MedSAMLiteLogic()
    engine = logic.engine()
    cache = engine.call("embeddings", **({"max_bytes": cache_bytes} if cache_bytes else {}))
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS (VmHWM) := current RSS
    before = _status_mib("VmRSS")
    t0 = time.perf_counter()
    run = logic.startSegment(volume, roi, segmentation, preset="brain", mode="3d")
    while not logic.poll(run):
        time.sleep(POLL_S)
    seconds = time.perf_counter() - t0
    peak = _status_mib("VmHWM")
    after = engine.call("embeddings")
    return {"seconds": seconds, "slices": run.task.progress.done, "roi_slices": roi_slices, "slicer_before_mib": before,
            "slicer_growth_mib": peak - before, "engine_peak_mib": engine.call("stats", backend="litemedsam")["peak_rss_mib"],
            "cache_limit_mib": cache["max_bytes"] / MiB, "cache_mib": after["bytes"] / MiB}


def bench_memory() -> list[str]:
    rows = []
    for cache_bytes, slices in ((None, None), (32 * MiB, 40)):
        args = [PYTHON, __file__, "--memory-child", json.dumps([cache_bytes, slices])]
        proc = subprocess.run(args, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = [("300 x 512 x 512 int16 CT (the atlas resampled; 150 MiB) in MRML, one 3D object, LiteMedSAM, a fresh process "
            "each (engine started, model not loaded); Slicer's process: peak RSS during the run minus RSS before it "
            "(VmHWM reset through /proc/self/clear_refs); the engine: its peak RSS (VmHWM, shared-memory pages it read "
            "included):"), "",
           "| cache setting (MiB) | ROI slices | slices segmented | seconds | Slicer process before (MiB) | Slicer process growth (MiB) | engine peak RSS (MiB) | cache after (MiB) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['cache_limit_mib']:.0f} | {r['roi_slices']} | {r['slices']} | {r['seconds']:.1f} | {r['slicer_before_mib']:.0f} | "
                   f"{r['slicer_growth_mib']:.0f} | {r['engine_peak_mib']:.0f} | {r['cache_mib']:.0f} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="clicks,3d,realsize,memory", help="comma-separated: clicks, 3d, realsize, memory")
    ap.add_argument("--repeat", type=int, default=5, help="rounds of the 2D clicks (3D and real size: 2 rounds)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(*json.loads(args.memory_child))))
        return 0

    module = harness.load_module()
    print(machine_line(sys.orig_argv) + "\n")
    parts = args.parts.split(",")
    with private_home():
        if "clicks" in parts:
            import_rule_checkpoints([b for b in CLICK_BACKENDS if b != "litemedsam"])
        for name, part in (("clicks", lambda: bench_clicks(module, args.repeat)), ("3d", lambda: bench_3d(module, 2)),
                           ("realsize", lambda: bench_realsize(2)), ("memory", bench_memory)):
            if name in parts:
                before, t0 = load(), time.perf_counter()
                lines = part()
                print("\n".join(lines))
                print(f"\n({name}: {time.perf_counter() - t0:.0f} s; load average before {before}, after {load()})\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
