"""Learning curve: does more CPU time pay? Validation scores against samples seen, for the
working-scale U-Net and the 128-px squash at the profile's recipe, at 1/2, 1 and 2 times its budget.

Each point is its own ``train`` run (the learning-rate schedule spans its whole budget), scored
on the validation split at the photos' own resolution: pixel Dice at the run's mask threshold,
and the false alarms on good parts at the lowest decision that catches 95% of the defective
parts (any call). The 1x points are the course's own runs (reused, not trained twice). Writes
``benchmarks/results/learning_curve.json`` and ``figures/learning_curve.png`` (``--out`` elsewhere).

    python benchmarks/bench_learning_curve.py [--profile default] [--multiples 0.5 1 2] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scratch_utils.figures import write_figure  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.dataset import ensure_prepared  # noqa: E402
from scratch_utils.profiles import get_profile, outputs, profile_dir  # noqa: E402
from scratch_utils.runs import load_run_config, read_metrics  # noqa: E402
from scratch_utils.train import train_or_reuse  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"working scale, tiles": None, "128-px squash": "square"}


def point(profile, path: str, multiple: float, seed: int, runs: Path) -> dict:
    """One point: the profile's recipe at ``multiple`` times its epochs (the same tiles per epoch).
    The 1x point of seed 0 is the course's own run (``outputs(profile).runs``: the notebooks
    reuse it, and so does this script)."""
    square = profile.square_size if PATHS[path] == "square" else None
    prepared = ensure_prepared(profile, progress=False, square=square)
    epochs = max(1, round(profile.training.epochs * multiple))
    config = profile.train_config("unet", epochs=epochs, seed=seed)
    name = f"{'square' if square else 'scaled'}-x{multiple:g}-s{seed}"
    if multiple == 1 and seed == 0:
        folder = outputs(profile).runs / ("unet_squashed" if square else "unet")
    else:
        folder = runs / name
    run = train_or_reuse(prepared, folder, config, verbose=0)
    metrics, extra = read_metrics(run), load_run_config(run)["extra"]
    row = {"path": path, "multiple": multiple, "epochs": epochs, "samples_seen": extra["tiles_seen"],
           "train_seconds": extra["train_seconds"], "val_dice": metrics["val"]["dice"],
           "val_auroc": metrics["val"]["auroc"], "val_false_alarms_at_95": metrics["val"]["false_alarms_at_95_any"],
           "val_false_alarms_at_95_located": metrics["val"]["false_alarms_at_95"]}
    print(f"{path:22s} x{multiple:<4g} {row['samples_seen']:6d} samples: val Dice {row['val_dice']:.3f}, "
          f"false alarms at 95% caught {row['val_false_alarms_at_95']:.0%} ({row['train_seconds']:.0f} s)", flush=True)
    return row


# What a curve written before the JSON named its recipe measured (docs/recipe.md, section 3).
EARLIER = "the earlier recipe (defect share 0.5, no hard negatives) on the first default set"


def plot(rows: list[dict], label: str, note: str = ""):
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 4.2))
    for k, path in enumerate(PATHS):
        mine = sorted((r for r in rows if r["path"] == path), key=lambda r: r["samples_seen"])
        x = [r["samples_seen"] for r in mine]
        colour = f"C{k}"
        axes[0].plot(x, [r["val_dice"] for r in mine], marker="o", color=colour, label=path)
        axes[1].plot(x, [r["val_false_alarms_at_95"] for r in mine], marker="o", color=colour,
                     label=f"{path}: any call")
        if all("val_false_alarms_at_95_located" in r for r in mine):
            # 100%: the run catches 95% where the defect is only by flagging every good part, or never;
            # drawn as crosses on the top edge, not joined to the other points as a trend
            located = np.array([r["val_false_alarms_at_95_located"] for r in mine], float)
            unreached = located >= 1.0 - 1e-9
            axes[1].plot(x, np.where(unreached, np.nan, located), marker="s", linestyle="--",
                         color=colour, label=f"{path}: where the defect is")
            if unreached.any():   # side by side on the log axis, so one path's crosses never hide the other's
                axes[1].plot(np.asarray(x)[unreached] * (0.94 if k == 0 else 1.06), np.ones(unreached.sum()),
                             linestyle="none", marker="x", markersize=10, markeredgewidth=2, color=colour,
                             label=f"{path}: 95% where the defect is not reached below 100%")
    axes[1].axhline(0.05, color="black", linestyle=":", linewidth=1.2, label="plant's limit: 5%")
    axes[0].set_title("pooled pixel Dice (validation, photo resolution)")
    axes[1].set_title("false alarms at 95% of defective parts caught")
    axes[0].set_ylabel("Dice")
    axes[1].set_ylabel("share of good validation parts flagged")
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(-0.02, 1.06)
    ticks = sorted({r["samples_seen"] for r in rows})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training samples seen (tiles or squashed photos, log scale)")
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False)
    axes[1].legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"Learning curve of the U-Net: {label}; validation, one seed per point"
                 + (f"\n{note}" if note else ""))
    fig.tight_layout()
    return fig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--multiples", nargs="*", type=float, default=[0.5, 1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the JSON and the figure (default: the repo's)")
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from the JSON")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    out = Path(args.out) if args.out else None
    json_path = (out or ROOT / "benchmarks" / "results") / "learning_curve.json"
    figure_path = (out or ROOT / "figures") / "learning_curve.png"
    if args.plot_only:
        kept = json.loads(json_path.read_text())
        note = "(redrawn from learning_curve.json: its own runs, not necessarily the committed report's)"
        write_figure(plot(kept["points"], kept.get("label", EARLIER), note), figure_path)
        return
    runs = profile_dir(profile) / "learning_curve"
    rows = [point(profile, path, multiple, args.seed, runs) for path in PATHS for multiple in args.multiples]
    label = f"the course's recipe, {profile.name} set"
    atomic_write_json(json_path, {"benchmark": "learning_curve", "profile": profile.name, "seed": args.seed, "label": label,
                                  "scored_on": "validation split, photo resolution", "points": rows,
                                  "cpu_count": os.cpu_count(), "machine": platform.machine()})
    write_figure(plot(rows, label), figure_path)
    print(f"wrote {json_path.name} and {figure_path.name}")


if __name__ == "__main__":
    main()
