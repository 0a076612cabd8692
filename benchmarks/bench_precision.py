"""Training speed in float32 against mixed bfloat16 on this CPU, in the same process.

Both models are the default profile's U-Net, compiled as ``train`` compiles them, one built
under each Keras dtype policy (``scratch_utils.train._strategy_and_precision``). They are
fitted in interleaved rounds on the same tiles held in memory, so only the model's arithmetic
differs; the best round of each is reported, because a 2-core CPU's speed drifts. Whether the
faster policy learns as well is a separate question, answered on validation by
``bench_recipe.py --variants recipe recipe_bf16``.

    python benchmarks/bench_precision.py [--rounds 3] [--steps 60]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from scratch_utils.augment import AugmentConfig  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.models import build_model  # noqa: E402
from scratch_utils.pipeline import make_tile_dataset  # noqa: E402
from scratch_utils.dataset import ensure_prepared  # noqa: E402
from scratch_utils.profiles import get_profile  # noqa: E402
from scratch_utils.train import PRECISIONS, _strategy_and_precision, compile_model  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "precision.json"


def main(argv=None) -> int:
    import keras
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="training steps per round")
    args = parser.parse_args(argv)
    profile = get_profile("default")
    training = profile.train_config("unet")
    batch, tile = training.batch_size, training.tile_size
    prepared = ensure_prepared(profile, progress=False)
    tiles = make_tile_dataset(prepared, tile, training.defect_share, batch, AugmentConfig.tiles(), seed=0)
    held = list(tiles.take(args.steps))
    x = np.concatenate([b[0].numpy() for b in held])
    y = np.concatenate([b[1].numpy() for b in held])

    models = {}
    for precision in PRECISIONS:
        _strategy_and_precision(precision)
        model = build_model("unet", None, training.base_filters)
        models[precision] = compile_model(model, "bce_dice", training.learning_rate, 10_000)
        keras.mixed_precision.set_global_policy("float32")
        models[precision].fit(x[:3 * batch], y[:3 * batch], batch_size=batch, epochs=1, verbose=0)  # trace once

    speeds = {precision: [] for precision in PRECISIONS}
    for _ in range(args.rounds):
        for precision, model in models.items():
            started = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
            speeds[precision].append(args.steps * batch / (time.perf_counter() - started))
    best = {precision: max(values) for precision, values in speeds.items()}
    result = {"benchmark": "precision", "model": "unet", "base_filters": training["base_filters"],
              "tile_size": tile, "batch": batch, "steps_per_round": args.steps, "rounds": args.rounds,
              "tiles_per_s": {k: round(v, 2) for k, v in best.items()},
              "ratio_bf16_over_float32": round(best["mixed_bfloat16"] / best["float32"], 3),
              "all_rounds": {k: [round(v, 2) for v in values] for k, values in speeds.items()},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "cpu_flags_bf16": _has_bf16()}}
    atomic_write_json(OUT, result)
    for precision, value in best.items():
        print(f"{precision:15s} {value:6.1f} tiles/s (best of {args.rounds} rounds of {args.steps} steps)")
    print(f"mixed_bfloat16 / float32 = {result['ratio_bf16_over_float32']:.2f} -> "
          f"{OUT.relative_to(OUT.parents[2])}")
    return 0


def _has_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
