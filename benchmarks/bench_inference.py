"""Whole-photo inference: milliseconds per 1280x720 photo for each model, the app's code path.

Each model is built at the profile's size, saved as a run folder, and loaded by
``predict.Predictor``; a synthetic 1280x720 JPEG goes through ``open`` (reduce-on-decode to the
working scale) and ``predict_photo`` (model on the whole photo, probability map resized back,
mask and verdict). Median of ``--repeats`` after a warm-up. Target: the U-Net under 1 s.

    python benchmarks/bench_inference.py [--profile default] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.geometry import Geometry  # noqa: E402
from scratch_utils.models import MODEL_NAMES, build_model  # noqa: E402
from scratch_utils.predict import Predictor  # noqa: E402
from scratch_utils.profiles import get_profile  # noqa: E402
from scratch_utils.runs import OperatingPoint, save_operating_point, write_config  # noqa: E402
from scratch_utils.synthetic import PartSpec, render_part  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "inference.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--scale", type=float, default=0.5, help="working scale (the synthetic set's)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "part.jpg"
        Image.fromarray(render_part(PartSpec(1, 0, 1280, 720))[0]).save(photo_path, quality=92)
        for name in MODEL_NAMES:
            run = Path(tmp) / name
            run.mkdir()
            model = build_model(name, None, profile.training.base_filters)
            model.save(run / "model.keras")
            write_config(run, {"model": name, "geometry": Geometry(scale=args.scale).as_dict()})
            save_operating_point(run, OperatingPoint(mask_threshold=0.5, decision_threshold=0.5, min_region=1))
            predictor = Predictor(run)
            predictor.predict_photo(*predictor.open(photo_path))  # warm-up: trace the model
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                predictor.predict_photo(*predictor.open(photo_path))
                times.append(time.perf_counter() - started)
            results[name] = {"parameters": int(model.count_params()),
                             "ms_per_photo": round(float(np.median(times)) * 1000, 1),
                             "best_ms": round(min(times) * 1000, 1)}
            print(f"{name:16s} {model.count_params() / 1e6:6.2f} M params: "
                  f"{results[name]['ms_per_photo']:7.0f} ms per 1280x720 photo (median of {args.repeats})")
    atomic_write_json(OUT, {"benchmark": "inference", "profile": profile.name,
                            "base_filters": profile.base_filters, "photo": "1280x720 JPEG",
                            "working_scale": args.scale, "models": results,
                            "target": "unet under 1000 ms per photo",
                            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
