"""Ablation: which training choices make the working-scale U-Net learn, scored on validation only.

Each variant changes one thing against the baseline (the default profile's U-Net recipe) and
is trained with ``scratch_utils.train`` at the same budget (epochs x tiles per epoch, batch
size), then read from its ``metrics.json`` "val" scores: pixel Dice at the photos' own
resolution, AUROC, and the false alarms on good parts at the validation-chosen decision. The
test split is never read here. Runs are kept under ``data/ablation/<set>/`` and reused, so
the script can be stopped and started again; ``--seeds`` repeats every variant.

Sets: ``small`` (600 synthetic parts of 320x240, the working path at scale 0.5 = 160x120,
about the 128-px squash's pixels: equal resolution) and ``default`` (the default profile's set).

    python benchmarks/bench_recipe.py --set small [--variants a b ...] [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from scratch_utils import synthetic  # noqa: E402
from scratch_utils.decision import false_alarms_at  # noqa: E402
from scratch_utils.evaluation import run_predictions  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.preparation import prepare  # noqa: E402
from scratch_utils.dataset import ensure_prepared  # noqa: E402
from scratch_utils.profiles import data_root, get_profile  # noqa: E402
from scratch_utils.runs import load_run_config, read_metrics  # noqa: E402
from scratch_utils.train import TrainConfig, train_or_reuse  # noqa: E402

HERE = Path(__file__).resolve().parent
# One change each against the baseline; "input": "square" trains on the 128-px squash instead.
VARIANTS = {
    "baseline": {},
    "zero_padding": {"tile_padding": "zeros"},
    "defect_share_0.25": {"defect_share": 0.25},
    "defect_share_0.1": {"defect_share": 0.1},
    "defect_share_0.9": {"defect_share": 0.9},
    "group_norm": {"normalization": "group"},
    "one_cycle": {"schedule": "one_cycle"},
    "loss_bce": {"loss": "bce"},
    "loss_dice": {"loss": "dice"},
    "loss_focal": {"loss": "focal"},
    "loss_tversky": {"loss": "tversky"},
    "tiles_256": {"tile_size": 256, "tiles_per_epoch": 80},   # the same pixels in 4x larger tiles
    "no_augmentation": {"augment": False},
    "squash": {"input": "square", "tile_size": 128},
    # Combinations of the single changes that helped on the small set (seed 0).
    "defect_share_0.75": {"defect_share": 0.75},
    "share_0.9+group_norm": {"defect_share": 0.9, "normalization": "group"},
    "share_0.9+tversky": {"defect_share": 0.9, "loss": "tversky"},
    "share_0.9+filters_16": {"defect_share": 0.9, "base_filters": 16},
    "squash+filters_16": {"input": "square", "tile_size": 128, "base_filters": 16},
    "filters_16": {"base_filters": 16},
    "share_0.9+budget_4x": {"defect_share": 0.9, "epochs": 32},   # 10,240 tiles: the learning curve's 4x
    # The adopted recipe (the default profile since): share 0.9, 4x the samples in 8 longer epochs,
    # so whole-photo validation runs 4 times instead of 16; and the squash at the same budget.
    "recipe": {"defect_share": 0.9, "tiles_per_epoch": 1280},
    "squash_4x": {"input": "square", "tile_size": 128, "tiles_per_epoch": 1280},
    "recipe_bf16": {"defect_share": 0.9, "tiles_per_epoch": 1280, "precision": "mixed_bfloat16"},
    "squash_4x_bf16": {"input": "square", "tile_size": 128, "tiles_per_epoch": 1280,
                       "precision": "mixed_bfloat16"},
}
# The budget every variant changes against: the default profile's U-Net recipe before this
# ablation (kept fixed here, so the default profile can adopt what won without moving the baseline).
BASE = {"model": "unet", "loss": "bce_dice", "epochs": 8, "base_filters": 8, "batch_size": 4,
        "learning_rate": 2e-3, "tile_size": 128, "tiles_per_epoch": 320, "defect_share": 0.5,
        "validate_every": 2}
REPORTED = ("dice", "dice_defective_parts", "auroc", "detection_rate", "false_alarm_rate")
SUMMARISED = REPORTED + ("false_alarms_at_95", "train_seconds")


def prepared_sets(name: str):
    """(working-scale folder, 128-px squash folder) of a set, made if missing."""
    if name == "default":
        profile = get_profile("default")
        return ensure_prepared(profile, progress=False), ensure_prepared(profile, progress=False, square=128)
    root = data_root() / "ablation" / "small"
    synthetic.generate(root / "synthetic", count=600, seed=0, width=320, height=240, progress=False)
    prepare(root / "synthetic", root / "prepared-scale0.5", scale=0.5, progress=False)
    prepare(root / "synthetic", root / "prepared-square128", size=128, progress=False)
    return root / "prepared-scale0.5", root / "prepared-square128"


def run_variant(name: str, seed: int, folders, runs: Path, base: dict) -> dict:
    scaled, square = folders
    changes = dict(VARIANTS[name])
    prepared = square if changes.pop("input", None) == "square" else scaled
    config = TrainConfig(**{**base, **changes, "seed": seed})
    run = train_or_reuse(prepared, runs / f"{name}-s{seed}", config, verbose=0)
    metrics = read_metrics(run)
    # The ablation's scores keep one definition across run formats: AUROC of each part's highest
    # probability, and the false alarms of the one-region (area) rule at 95% caught.
    val = {**metrics["val"], "auroc": metrics["val"].get("auroc_max_probability", metrics["val"]["auroc"])}
    row = {"variant": name, "seed": seed, **{key: val[key] for key in REPORTED},
           "false_alarms_at_95": false_alarms_at(run_predictions(run, "val"), target=0.95, measures=("area",)),
           "val_point": metrics["operating_point"], "train_seconds": load_run_config(run)["extra"]["train_seconds"]}
    print(f"{name:20s} seed {seed}: val Dice {row['dice']:.3f}, per part {row['dice_defective_parts']:.3f}, "
          f"AUROC {row['auroc']:.3f}, false alarms at 95% caught {row['false_alarms_at_95']:.0%} "
          f"(trained in {row['train_seconds']:.0f} s)", flush=True)
    return row


def summarise(rows: list[dict], keys=SUMMARISED) -> dict:
    """Per variant: mean and (min, max) over seeds of each of ``keys``."""
    summary = {}
    for name in dict.fromkeys(row["variant"] for row in rows):
        mine = [row for row in rows if row["variant"] == name]
        summary[name] = {"seeds": len(mine), **{
            key: {"mean": round(float(np.mean([r[key] for r in mine])), 6),
                  "min": round(float(np.min([r[key] for r in mine])), 6),
                  "max": round(float(np.max([r[key] for r in mine])), 6)} for key in keys}}
    return summary


LABELS = {"dice": "val Dice", "dice_defective_parts": "Dice per defective part", "auroc": "AUROC",
          "false_alarms_at_95": "false alarms at 95% caught", "train_seconds": "train s"}


def markdown_table(result: dict) -> str:
    """The README's ablation table: one row per variant, each score's mean over seeds with
    its range, the change against the baseline in the first column."""
    summary, variants = result["summary"], result["variants"]

    formats = {"false_alarms_at_95": lambda v: f"{100 * v:.0f}%", "train_seconds": lambda v: f"{v:.0f}"}

    def cell(stats: dict, key: str) -> str:
        fmt = formats.get(key, lambda v: f"{v:.3f}")
        spread = "" if stats["min"] == stats["max"] else f" ({fmt(stats['min'])}-{fmt(stats['max'])})"
        return fmt(stats["mean"]) + spread

    lines = ["| variant | change | seeds | " + " | ".join(LABELS.values()) + " |",
             "|" + "---|" * (3 + len(LABELS))]
    for name, stats in summary.items():
        changes = dict(variants[name])
        square = changes.pop("input", None) == "square"
        changes.pop("tile_size", None) if square else None
        change = ", ".join(["128-px squash, whole photos"] * square + [f"{k} {v}" for k, v in changes.items()]) or "-"
        lines.append(f"| {name} | {change} | {stats['seeds']} | "
                     + " | ".join(cell(stats[key], key) for key in LABELS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="small", choices=("small", "default"))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the default profile's")
    args = parser.parse_args()
    base = dict(BASE)
    if args.epochs:
        base["epochs"] = args.epochs
    folders = prepared_sets(args.set)
    runs = data_root() / "ablation" / args.set / "runs"
    rows = [run_variant(name, seed, folders, runs, base) for seed in args.seeds for name in args.variants]
    out = HERE / "results" / f"recipe_{args.set}.json"
    previous = __import__("json").loads(out.read_text()) if out.is_file() else {"runs": []}
    kept = [r for r in previous["runs"] if (r["variant"], r["seed"]) not in {(x["variant"], x["seed"]) for x in rows}]
    rows = kept + rows
    atomic_write_json(out, {"benchmark": "recipe", "set": args.set, "budget": {
        k: base[k] for k in ("epochs", "tiles_per_epoch", "batch_size", "base_filters", "learning_rate")},
        "scored_on": "validation split, photo resolution", "variants": VARIANTS,
        "summary": summarise(rows), "runs": rows, "cpu_count": os.cpu_count(),
        "machine": platform.machine()})
    print(markdown_table(__import__("json").loads(out.read_text())))
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
