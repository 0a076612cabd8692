"""Whole-photo inference: milliseconds per 1280x720 photo for each model, the app's code path,
against the model's own forward pass on the same input, in the same run.

Each model is built at the profile's size, saved as a run folder, and loaded by
``predict.Predictor``; a synthetic 1280x720 JPEG goes through ``open`` (reduce-on-decode to the
working scale; the photo at its own size is decoded only for drawing, which this does not time) and
``predict_photo`` (model on the whole photo, probability map resized back, mask and call). ``--run RUN`` adds a trained run (its
masks are not empty, so the region rule has regions to measure). Medians of ``--repeats`` after
a warm-up, the two timings interleaved. Targets: the U-Net under 1 s, and its Predictor path
within 1.2 times its forward pass.

    python benchmarks/bench_inference.py [--profile default] [--repeats 9] [--run data/default/runs/unet]
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
from scratch_utils.predict import Predictor, model_outputs  # noqa: E402
from scratch_utils.profiles import get_profile  # noqa: E402
from scratch_utils.decision import OperatingPoint  # noqa: E402
from scratch_utils.runs import save_operating_point, write_config  # noqa: E402
from scratch_utils.synthetic import PartSpec, render_part  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "inference.json"


def timed(predictor: Predictor, photo_path: Path, repeats: int) -> dict:
    """Median milliseconds of the Predictor path and of the model's forward pass on its input."""
    opened = predictor.open(photo_path)
    x, _ = predictor.model_input(opened.model_photo, opened.size)
    predictor.predict_photo(opened)
    model_outputs(predictor.network, x)                                   # warm-up: trace the model
    path, forward = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict_photo(predictor.open(photo_path))
        path.append(time.perf_counter() - started)
        started = time.perf_counter()
        model_outputs(predictor.network, x)
        forward.append(time.perf_counter() - started)
    path_ms, forward_ms = float(np.median(path)) * 1000, float(np.median(forward)) * 1000
    return {"ms_per_photo": round(path_ms, 1), "model_forward_ms": round(forward_ms, 1),
            "ratio_path_over_forward": round(path_ms / forward_ms, 3), "best_ms": round(min(path) * 1000, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--scale", type=float, default=0.5, help="working scale (the synthetic set's)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder to time too")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "part.jpg"
        Image.fromarray(render_part(PartSpec(1, 0, 1280, 720))[0]).save(photo_path, quality=92)
        runs = {}
        for name in MODEL_NAMES:
            runs[name] = Path(tmp) / name
            runs[name].mkdir()
            build_model(name, None, profile.training.base_filters).save(runs[name] / "model.keras")
            write_config(runs[name], {"model": name, "geometry": Geometry(scale=args.scale).as_dict()})
            save_operating_point(runs[name], OperatingPoint(mask_threshold=0.5, decision_threshold=0.5, min_region=1))
        if args.run:
            runs[f"trained: {args.run.name}"] = args.run
        for name, run in runs.items():
            predictor = Predictor(run)
            results[name] = {"parameters": int(predictor.model.count_params()), "rule": predictor.point.rule,
                             **timed(predictor, photo_path, args.repeats)}
            r = results[name]
            print(f"{name:22s} {r['parameters'] / 1e6:6.2f} M params: {r['ms_per_photo']:6.0f} ms per 1280x720 photo, "
                  f"forward pass {r['model_forward_ms']:5.0f} ms, ratio {r['ratio_path_over_forward']:.2f}")
    atomic_write_json(OUT, {"benchmark": "inference", "profile": profile.name,
                            "base_filters": profile.training.base_filters, "photo": "1280x720 JPEG",
                            "working_scale": args.scale, "models": results,
                            "targets": {"unet ms_per_photo": 1000, "unet ratio_path_over_forward": 1.2},
                            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
