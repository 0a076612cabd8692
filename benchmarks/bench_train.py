"""Training throughput end to end, against a plain Keras fit on the same tiles held in memory.

``ours``: what ``train`` runs: ``pipeline.make_tile_dataset`` (tiles decoded from the prepared PNGs
in parallel, defect-centred share, the tiles' augmentation) feeding the model.
``plain``: the same architecture, compiled the same way, fitted on the same number of tiles taken
from that pipeline once and held in memory as NumPy arrays (no input work during the fit).
Both run in this process, in interleaved rounds; the best round of each is reported, because a
2-core CPU's speed drifts between rounds. Target: ours within 15% of plain (ratio >= 0.85).

    python benchmarks/bench_train.py [--profile default] [--rounds 3] [--steps 40]
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
from scratch_utils.dataset import ensure_prepared  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.models import build_model  # noqa: E402
from scratch_utils.pipeline import make_tile_dataset  # noqa: E402
from scratch_utils.profiles import get_profile  # noqa: E402
from scratch_utils.train import compile_model  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "train.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="training steps per round")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    training = profile.train_config(args.model)
    batch, tile = training.batch_size, training.tile_size
    prepared = ensure_prepared(profile, progress=False)

    def fresh_model():
        model = build_model(args.model, None, training.base_filters)
        return compile_model(model, "bce_dice", training.learning_rate, 10_000)

    tiles = make_tile_dataset(prepared, tile, training.defect_share, batch, AugmentConfig.tiles(), seed=0)
    held = [batch_pair for batch_pair in tiles.take(args.steps)]
    x = np.concatenate([b[0].numpy() for b in held])
    y = np.concatenate([b[1].numpy() for b in held])
    ours_model, plain_model = fresh_model(), fresh_model()
    ours_model.fit(tiles, steps_per_epoch=3, epochs=1, verbose=0)           # build and trace once
    plain_model.fit(x[:3 * batch], y[:3 * batch], batch_size=batch, epochs=1, shuffle=False, verbose=0)

    ours, plain = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        ours_model.fit(tiles, steps_per_epoch=args.steps, epochs=1, verbose=0)
        ours.append(args.steps * batch / (time.perf_counter() - started))
        started = time.perf_counter()
        plain_model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        plain.append(args.steps * batch / (time.perf_counter() - started))
    result = {
        "benchmark": "train", "profile": profile.name, "model": args.model,
        "base_filters": training["base_filters"], "tile_size": tile, "batch": batch,
        "steps_per_round": args.steps, "rounds": args.rounds,
        "ours_tiles_per_s": round(max(ours), 2), "plain_tiles_per_s": round(max(plain), 2),
        "ratio": round(max(ours) / max(plain), 3),
        "all_rounds": {"ours": [round(v, 2) for v in ours], "plain": [round(v, 2) for v in plain]},
        "target": "ours within 15% of plain (ratio >= 0.85)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    atomic_write_json(OUT, result)
    print(f"{args.model} f={training['base_filters']}, {tile}-px tiles, batch {batch}, best of {args.rounds} "
          f"rounds of {args.steps} steps:")
    print(f"  train (tf.data tiles + augmentation + model): {max(ours):6.1f} tiles/s")
    print(f"  plain Keras fit on the same tiles in memory:   {max(plain):6.1f} tiles/s")
    print(f"  ratio {result['ratio']:.2f} (target >= 0.85) -> {OUT.relative_to(OUT.parents[2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
