"""Benchmark: the app under load on 127.0.0.1.

Starts ``scratch_utils.serve`` (Werkzeug, threaded) on a free local port with a run folder
(default: the best run of the default profile), then sends a bounded number of
``POST /api/v1/mask`` requests with a synthetic 1280x720 photo from N concurrent clients.
Prints requests/s and latency percentiles; writes ``benchmarks/results/serve_<run name>.json``.

    python benchmarks/bench_serve.py [--run RUN] [--requests 500] [--clients 8]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from scratch_utils.profiles import get_profile, profile_dir  # noqa: E402
from scratch_utils.serve import create_app  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(profile_dir(get_profile("default")) / "runs" / "unet"))
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    if not (Path(args.run) / "model.keras").is_file():
        raise SystemExit(f"no run at {args.run}: run `make report` (or pass --run)")

    source = profile_dir(get_profile("default")) / "synthetic" / "images"
    photo = sorted(source.glob("*.jpg"))[0].read_bytes()
    boundary = "benchboundary"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\n"
               f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access-log line per request
    server = make_server("127.0.0.1", port, create_app(args.run), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/api/v1/mask"

    def one(_):
        started = time.perf_counter()
        request = urllib.request.Request(url, data=payload, method="POST", headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                ok = response.status == 200 and "verdict" in json.loads(response.read())
        except OSError:
            ok = False
        return ok, time.perf_counter() - started

    one(0)  # warm-up: the first inference builds the graph
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        results = list(pool.map(one, range(args.requests)))
    seconds = time.perf_counter() - started
    server.shutdown()
    latencies = np.array([latency for _, latency in results]) * 1000
    failures = sum(not ok for ok, _ in results)
    result = {"benchmark": "serve", "run": Path(args.run).name, "requests": args.requests,
              "clients": args.clients, "photo": "1280x720 JPEG", "failures": failures,
              "requests_per_s": round(args.requests / seconds, 1),
              "latency_ms": {p: round(float(np.percentile(latencies, int(p[1:]))), 1)
                             for p in ("p50", "p95", "p99")},
              "cpu_count": os.cpu_count(), "machine": platform.machine()}
    print(f"{args.requests} requests from {args.clients} clients: {result['requests_per_s']} req/s, "
          f"p50 {result['latency_ms']['p50']} ms, p95 {result['latency_ms']['p95']} ms, "
          f"failures {failures}")
    out = HERE / "results" / f"serve_{Path(args.run).name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
