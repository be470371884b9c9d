"""Box -> overlay latency of `medficient serve` once the shown slice's embedding exists.

Starts the app on a free port (uvicorn, as `medficient serve` does), opens a real image, encodes
the shown slice once (/embed, what the page does when a slice is shown), then times N boxes over
HTTP: POST /objects (decode + mask) followed by GET of the overlay PNG the page draws.

    .venv/bin/python benchmarks/bench_app_box.py [--backend openvino|onnxruntime|torch] [--boxes 30] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np


def call(url: str, body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def start_server(data_dir: Path, backend: str | None, precision: str) -> tuple[str, object]:
    import uvicorn

    from medficient.app.segment import EnginePool
    from medficient.app.server import AppConfig, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(AppConfig(data_dir, pool=EnginePool(backend=backend, precision=precision))), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def bench_image(url: str, path: str, index: int, boxes: list[list[int]]) -> dict:
    sid = json.loads(call(f"{url}/api/sessions", {}))["session"]
    call(f"{url}/api/s/{sid}/open", {"path": path})
    t0 = time.perf_counter()
    call(f"{url}/api/s/{sid}/embed", {"axis": 0, "index": index})
    encode = time.perf_counter() - t0
    times, decode = [], []
    for i, box in enumerate(boxes):
        t0 = time.perf_counter()
        res = json.loads(call(f"{url}/api/s/{sid}/objects", {"axis": 0, "index": index, "box": box}))
        call(f"{url}/api/s/{sid}/overlay/0/{index}.png?v={i}")
        times.append(time.perf_counter() - t0)
        decode.append(res["timing"]["decode_s"])
        assert res["timing"]["embedding_cached"], "the embedding was computed again"
    return {
        "image": path, "boxes": len(boxes), "encode_s": round(encode, 3),
        "box_to_overlay_median_s": round(statistics.median(times), 4),
        "box_to_overlay_p90_s": round(float(np.percentile(times, 90)), 4),
        "decode_median_s": round(statistics.median(decode), 4),
    }


def main() -> int:
    from medficient.samples import coins_case, mni152_case

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["openvino", "onnxruntime", "torch"], help="default: as `serve` (openvino when installed)")
    parser.add_argument("--precision", default="f32", choices=["f32", "bf16", "int8"])
    parser.add_argument("--boxes", type=int, default=30)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        coins = coins_case()
        cv2.imwrite(str(data / "coins.png"), coins["imgs"])
        mni = mni152_case(slice(75, 80))
        np.savez(data / "3DBox_MR_mni.npz", imgs=mni["imgs"], spacing=np.ones(3))
        url, server = start_server(data, args.backend, args.precision)
        results = []
        for path, index, base in (("coins.png", 0, coins["boxes"]), ("3DBox_MR_mni.npz", 2, mni["boxes"][:, [0, 1, 3, 4]])):
            boxes = [list(map(int, base[i % len(base)] + rng.integers(-2, 3, 4) * [1, 1, 1, 1])) for i in range(args.boxes)]
            h, w = (303, 384) if path == "coins.png" else mni["imgs"].shape[1:]
            boxes = [[max(0, b[0]), max(0, b[1]), min(w - 1, max(b[0], b[2])), min(h - 1, max(b[1], b[3]))] for b in boxes]
            bench_image(url, path, index, boxes[:2])  # warm-up: model load, first calls
            config = json.loads(call(f"{url}/api/config"))
            results.append({"backend": config["backend"], "precision": config["precision"], **bench_image(url, path, index, boxes)})
        server.should_exit = True
    for r in results:
        print(f"{r['backend']:11s} {r['image']:18s} encode once {r['encode_s']:.3f} s; box -> overlay median {r['box_to_overlay_median_s']:.3f} s "
              f"(p90 {r['box_to_overlay_p90_s']:.3f} s, decoder median {r['decode_median_s']:.3f} s) over {r['boxes']} boxes")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
