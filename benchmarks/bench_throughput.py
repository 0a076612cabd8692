"""Training throughput with XLA (``jit_compile``) and TensorFlow's thread settings, against the
default (no XLA, TensorFlow's own thread counts), on the same tiles held in memory.

Each setting runs in its own process (thread counts are fixed when TensorFlow starts), all in one
run of this script, in interleaved rounds; the median round of each is reported with its ratio to the
default. Whether a faster setting learns as well is measured by ``bench_diagnosis.py`` (variant
``xla``: validation Dice at the same samples).

    python benchmarks/bench_throughput.py [--rounds 3] [--steps 60]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "throughput.json"
SETTINGS = {"default": {}, "xla": {"jit": True}, "intra 2, inter 1": {"intra": 2, "inter": 1},
            "xla, intra 2, inter 1": {"jit": True, "intra": 2, "inter": 1}}

CHILD = r"""
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
setting, steps = json.loads(sys.argv[1]), int(sys.argv[2])
import tensorflow as tf
if "intra" in setting:
    tf.config.threading.set_intra_op_parallelism_threads(setting["intra"])
    tf.config.threading.set_inter_op_parallelism_threads(setting["inter"])
import numpy as np
from scratch_utils.models import build_model
from scratch_utils.profiles import get_profile
from scratch_utils.train import compile_model
config = get_profile("default").train_config("unet")
rng = np.random.default_rng(0)
x = rng.random((steps * config.batch_size, config.tile_size, config.tile_size, 3)).astype("float32")
y = (rng.random((steps * config.batch_size, config.tile_size, config.tile_size, 1)) < 0.05).astype("float32")
model = compile_model(build_model("unet", None, config.base_filters), config.loss, config.learning_rate, 10_000,
                      jit_compile=setting.get("jit", False))
model.fit(x[:4 * config.batch_size], y[:4 * config.batch_size], batch_size=config.batch_size, verbose=0)  # trace
started = time.perf_counter()
model.fit(x, y, batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0)
print(json.dumps({"tiles_per_s": len(x) / (time.perf_counter() - started)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    rounds = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, setting in SETTINGS.items():
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(setting), str(args.steps)],
                                  capture_output=True, text=True, check=True)
            rounds[name].append(json.loads(done.stdout.strip().splitlines()[-1])["tiles_per_s"])
    median = {name: sorted(values)[len(values) // 2] for name, values in rounds.items()}
    result = {"benchmark": "throughput", "model": "unet (default profile)", "steps_per_round": args.steps,
              "rounds": args.rounds, "settings": SETTINGS,
              "median_tiles_per_s": {k: round(v, 1) for k, v in median.items()},
              "ratio_to_default": {k: round(v / median["default"], 3) for k, v in median.items()},
              "all_rounds": {k: [round(v, 1) for v in values] for k, values in rounds.items()},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    for name in SETTINGS:
        print(f"{name:24s} {median[name]:6.1f} tiles/s  ({result['ratio_to_default'][name]:.2f}x the default)")
    print(f"wrote {OUT.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
