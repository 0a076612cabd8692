"""Benchmark: the app under load on 127.0.0.1, clean and with hostile uploads mixed in.

Starts ``scratch_utils.serve`` (Werkzeug, threaded) on a free local port with a run folder
(default: the U-Net of the default profile), then sends a bounded number of
``POST /api/v1/mask`` requests with a synthetic 1280x720 photo from N concurrent clients,
twice in the same process: a clean run, then a mixed run where 1 request in 10 is a pixel
bomb (a 165 KB PNG declaring 15000x10000) or a corrupt file. Prints requests/s and latency
percentiles of the good requests in both, the ratio of their p95 (target: mixed within 20%
of clean), and checks every bad request got its 4xx; writes
``benchmarks/results/serve_<run name>.json``.

    python benchmarks/bench_serve.py [--run RUN] [--requests 300] [--clients 8]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.profiles import get_profile, profile_dir  # noqa: E402
from scratch_utils.serve import create_app  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hostile_uploads import flat_png_bytes  # noqa: E402

HERE = Path(__file__).resolve().parent
BOUNDARY = "benchboundary"


def multipart(body: bytes, name: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + body + f"\r\n--{BOUNDARY}--\r\n".encode()


def load(url: str, kinds: list[str], uploads: dict, clients: int) -> dict:
    """Send one request per entry of ``kinds``; per kind: statuses and latencies."""
    def one(kind):
        started = time.perf_counter()
        request = urllib.request.Request(url, data=uploads[kind], method="POST", headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status = response.status if "verdict" in json.loads(response.read()) else -1
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0                                   # lost: no answer at all
        return kind, status, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, kinds))
    seconds = time.perf_counter() - started
    good = np.array([t for kind, _, t in results if kind == "good"]) * 1000
    statuses: dict = {}
    for kind, status, _ in results:
        statuses.setdefault(kind, {}).setdefault(str(status), 0)
        statuses[kind][str(status)] += 1
    return {"requests": len(kinds), "seconds": round(seconds, 1),
            "good_requests_per_s": round(len(good) / seconds, 2), "statuses": statuses,
            "good_latency_ms": {p: round(float(np.percentile(good, int(p[1:]))), 1)
                                for p in ("p50", "p95", "p99")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(profile_dir(get_profile("default")) / "runs" / "unet"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    if not (Path(args.run) / "model.keras").is_file():
        raise SystemExit(f"no run at {args.run}: run `make report` (or pass --run)")

    from scratch_utils.dataset import synthetic_source
    source = synthetic_source(get_profile("default"), progress=False) / "test"
    photo = sorted(source.rglob("*.jpg"))[0].read_bytes()
    uploads = {"good": multipart(photo, "p.jpg"),
               "bomb": multipart(flat_png_bytes(15000, 10000), "flat.png"),
               "corrupt": multipart(photo[:4000], "cut.jpg")}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access-log line per request
    server = make_server("127.0.0.1", port, create_app(args.run), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/api/v1/mask"

    load(url, ["good"] * 2, uploads, 1)  # warm-up: the first inference builds the graph
    clean = load(url, ["good"] * args.requests, uploads, args.clients)
    mixed_kinds = ["bomb" if k % 20 == 9 else "corrupt" if k % 20 == 19 else "good"
                   for k in range(args.requests)]
    mixed = load(url, mixed_kinds, uploads, args.clients)
    server.shutdown()

    ratio = mixed["good_latency_ms"]["p95"] / clean["good_latency_ms"]["p95"]
    lost = sum(n for run in (clean, mixed) for kind in run["statuses"].values()
               for status, n in kind.items() if status in ("0", "-1"))
    bad_refused = (mixed["statuses"].get("bomb", {}) == {"413": mixed_kinds.count("bomb")}
                   and mixed["statuses"].get("corrupt", {}) == {"400": mixed_kinds.count("corrupt")})
    result = {"benchmark": "serve", "run": Path(args.run).name, "clients": args.clients,
              "photo": "1280x720 JPEG, whole-photo inference", "clean": clean, "mixed": mixed,
              "mixed_over_clean_p95": round(ratio, 3), "lost": lost,
              "every_bad_request_refused_with_4xx": bad_refused,
              "cpu_count": os.cpu_count(), "machine": platform.machine()}
    for name, run in (("clean", clean), ("mixed", mixed)):
        print(f"{name}: {run['requests']} requests from {args.clients} clients: "
              f"{run['good_requests_per_s']} good req/s, p50 {run['good_latency_ms']['p50']} ms, "
              f"p95 {run['good_latency_ms']['p95']} ms; statuses {run['statuses']}")
    print(f"good p95 mixed / clean: {ratio:.2f} (target <= 1.20); lost {lost}; "
          f"every bad request refused with its 4xx: {bad_refused}")
    out = HERE / "results" / f"serve_{Path(args.run).name}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
