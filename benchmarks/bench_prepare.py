"""Benchmark: preparation throughput against the seed's naive sequential loop.

Prepares N synthetic 1280x720 JPEG parts (AIHub labels) at 128 px with
``scratch_utils.preparation.prepare`` (reduce-on-decode + all cores), then runs a naive
sequential loop over the same files in the same process (full PIL decode, resize,
polygon mask, save: what seed 000 did, minus its sleep), and reports both rates and
the ratio. Writes ``benchmarks/results/prepare.json``.

    python benchmarks/bench_prepare.py [--count 1000] [--size 128]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from scratch_utils import QUALITY_DEFECTIVE, synthetic
from scratch_utils.preparation import prepare
from scratch_utils.labels import read_json_label
from scratch_utils.files import atomic_write_json

HERE = Path(__file__).resolve().parent


def naive_loop(source: Path, out: Path, size: int) -> int:
    """Seed 000's approach, sequential: decode the full photo, resize, rasterise, save."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir(parents=True)
    count = 0
    for label_path in sorted((source / "labels").glob("*.json")):
        label = read_json_label(label_path)
        meta = label["images"][0]
        image = Image.open(source / "images" / meta["file_name"]).convert("RGB")
        width, height = image.size
        mask = np.zeros((height, width), dtype=np.uint8)
        for ann in label["annotations"]:
            if ann["attributes"]["quality"] == QUALITY_DEFECTIVE:
                rle = mask_utils.merge(mask_utils.frPyObjects([ann["segmentation"]], height, width))
                mask |= mask_utils.decode(rle)
        stem = Path(meta["file_name"]).stem
        image.resize((size, size)).save(out / "images" / f"{stem}.png")
        Image.fromarray(mask * 255).resize((size, size), Image.Resampling.NEAREST).save(
            out / "masks" / f"{stem}.png")
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--parts", default=str(HERE / "out" / "parts"),
                        help="where the synthetic source parts are cached")
    args = parser.parse_args()

    parts = Path(args.parts)
    t0 = time.perf_counter()
    synthetic.generate(parts, count=args.count, seed=7, progress=True)
    print(f"source: {args.count} parts 1280x720 in {parts} ({time.perf_counter() - t0:.0f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Warm the page cache for both contenders alike.
        for path in (parts / "images").glob("*.jpg"):
            path.read_bytes()
        t0 = time.perf_counter()
        summary = prepare(parts, tmp / "ours", size=args.size, progress=False)
        ours_s = time.perf_counter() - t0
        ours_n = summary["counts"]["prepared"]

        t0 = time.perf_counter()
        naive_n = naive_loop(parts, tmp / "naive", args.size)
        naive_s = time.perf_counter() - t0
        shutil.rmtree(tmp / "naive")

    ours_rate, naive_rate = ours_n / ours_s, naive_n / naive_s
    result = {
        "benchmark": "prepare", "count": args.count, "size": args.size,
        "source": "synthetic 1280x720 JPEG, AIHub labels",
        "ours_images_per_s": round(ours_rate, 1), "ours_seconds": round(ours_s, 2),
        "naive_images_per_s": round(naive_rate, 1), "naive_seconds": round(naive_s, 2),
        "speedup": round(ours_rate / naive_rate, 2),
        "targets": {"images_per_s": 150, "speedup": 3.0},
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "pillow": Image.__version__,
    }
    print(f"scratch_utils.prepare : {ours_rate:7.1f} images/s ({ours_n} in {ours_s:.1f} s, "
          f"{summary['workers']} workers)")
    print(f"naive sequential loop : {naive_rate:7.1f} images/s ({naive_n} in {naive_s:.1f} s)")
    print(f"speed-up              : {result['speedup']:.2f}x   (targets: >= 150 images/s, >= 3x)")
    out = HERE / "results" / "prepare.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
