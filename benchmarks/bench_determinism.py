"""Why one seed gives different models on different CPUs: the same training, run in fresh
processes under different kernel settings, compared weight by weight.

Each worker process trains the default profile's U-Net (the recipe's model, loss and optimiser)
for ``--steps`` steps on the same tiles (``pipeline.make_tile_dataset`` on the smoke set, seed 0),
and keeps its weights after steps 1, 10, 100 and the last. Settings:

- ``repeat-a`` / ``repeat-b``: this machine's default kernels, twice (is one CPU reproducible?);
- ``isa-sse41``: oneDNN capped at SSE4.1 (``ONEDNN_MAX_CPU_ISA``), the same arithmetic done with
  narrower vector kernels, as an older or different CPU runs it;
- ``eigen``: oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``), TensorFlow's own kernels;
- ``deterministic`` / ``deterministic-sse41``: ``tf.config.experimental.enable_op_determinism``,
  with the default kernels and capped at SSE4.1 (does the switch remove the difference?).

Prints, for each setting, the weights' relative distance from ``repeat-a`` after each kept step
and the training loss at the end; writes ``benchmarks/results/determinism.json``.

    python benchmarks/bench_determinism.py [--steps 300]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "determinism.json"
SETTINGS = {
    "repeat-a": {},
    "repeat-b": {},
    "isa-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "deterministic": {"SCRATCH_OP_DETERMINISM": "1"},
    "deterministic-sse41": {"SCRATCH_OP_DETERMINISM": "1", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def kept_steps(steps: int) -> list[int]:
    return sorted({s for s in (1, 10, 100, steps) if s <= steps})


class KeepWeights(keras.callbacks.Callback):
    """The training loss of every step, and the flattened weights after the ``keep`` steps."""
    def __init__(self, keep):
        super().__init__()
        self.keep, self.kept, self.losses = set(keep), {}, []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))
        if batch + 1 in self.keep:
            self.kept[f"step{batch + 1}"] = np.concatenate([w.ravel() for w in self.model.get_weights()])


def worker(steps: int, out: Path) -> None:
    """Train in this process and write the kept weights and the losses to ``out`` (.npz)."""
    from scratch_utils.augment import AugmentConfig
    from scratch_utils.dataset import ensure_prepared
    from scratch_utils.models import build_model
    from scratch_utils.pipeline import make_tile_dataset
    from scratch_utils.profiles import get_profile
    from scratch_utils.train import compile_model, set_seeds

    training = get_profile("default").train_config("unet")
    set_seeds(0, deterministic=os.environ.get("SCRATCH_OP_DETERMINISM") == "1")
    prepared = ensure_prepared(get_profile("smoke"), progress=False)
    tiles = make_tile_dataset(prepared, training.tile_size, training.defect_share, training.batch_size,
                              AugmentConfig.tiles(), seed=0)
    model = compile_model(build_model("unet", None, training.base_filters), training.loss,
                          training.learning_rate, steps)
    keep = KeepWeights(kept_steps(steps))
    model.fit(tiles, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[keep])
    np.savez(out, losses=np.array(keep.losses), **keep.kept)


def run_setting(name: str, steps: int, folder: Path) -> tuple[Path, float]:
    env = {**os.environ, **SETTINGS[name]}
    out = folder / f"{name}.npz"
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--worker", str(out), "--steps", str(steps)], env=env, check=True)
    return out, time.perf_counter() - started


def cpu_model() -> str:
    """The CPU's model name: runs of one seed agree only on one kind of CPU (docs/speed.md)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def cpu_flags() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted({f for f in flags.split(":", 1)[1].split() if f.startswith(("avx", "amx", "sse4"))})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.steps, args.worker)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: run_setting(name, args.steps, Path(tmp)) for name in SETTINGS}
        loaded = {name: dict(np.load(path)) for name, (path, _) in files.items()}
        reference = loaded["repeat-a"]
        for name, values in loaded.items():
            distances = {}
            for step in kept_steps(args.steps):
                a, b = values[f"step{step}"], reference[f"step{step}"]
                distances[str(step)] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
            rows.append({"setting": name, "env": SETTINGS[name], "seconds": round(files[name][1], 1),
                         "identical_to_repeat_a": bool(all(np.array_equal(values[k], reference[k])
                                                            for k in reference if k.startswith("step"))),
                         "relative_weight_distance": distances,
                         "final_loss": float(np.mean(values["losses"][-20:]))})
            print(f"{name:20s} identical: {rows[-1]['identical_to_repeat_a']!s:5s}  distance from repeat-a after "
                  + ", ".join(f"step {s}: {d:.1e}" for s, d in distances.items())
                  + f"; loss (last 20 steps) {rows[-1]['final_loss']:.4f}", flush=True)
    import tensorflow as tf
    result = {"benchmark": "determinism across kernels", "steps": args.steps, "rows": rows,
              "tensorflow": tf.__version__, "cpu": cpu_model(), "cpu_flags": cpu_flags(),
              "cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
