"""Diagnosis: why does the working-scale U-Net learn less than the 128-px squash on some real
photos? One change at a time against one baseline, scored on the validation split only.

The baseline is the default profile's U-Net recipe as it stood when the diagnosis began
(``BASE``, frozen here so that adopting a winner does not move it), on the set prepared at the
automatic scale. Each variant changes one thing: how the set is prepared (``prepare``: a fixed
scale, the squash) or one training setting (``train``: a :class:`TrainConfig` field). Every run
is a real ``train`` run at the same number of samples; its ``metrics.json`` "val" scores are
read (pixel Dice at the photos' own resolution, Dice per defective part, AUROC of the
decision's score) with the false alarms at 95% caught from the validation detection curve. The
test split is never read here. Runs are kept under ``data/diagnosis/<set>/`` and reused.

    python benchmarks/bench_diagnosis.py --set magnetic_tile=../shared/real/magnetic_tile [--variants ...] [--seeds 0 1]
    python benchmarks/bench_diagnosis.py --set default        # the synthetic default set

Writes ``benchmarks/results/diagnosis_<set>.json`` and prints its table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


from scratch_utils.decision import choose_operating_point, false_alarms_at  # noqa: E402
from scratch_utils.evaluation import run_predictions, scores  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.preparation import prepare  # noqa: E402
from scratch_utils.profiles import data_root, get_profile  # noqa: E402
from scratch_utils.runs import load_run_config, read_history  # noqa: E402
from scratch_utils.train import TrainConfig, train_or_reuse  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_recipe import summarise  # noqa: E402

# The default profile's U-Net recipe when this diagnosis began (docs/recipe.md, "recipe").
BASE = {"model": "unet", "loss": "bce_dice", "epochs": 8, "base_filters": 8, "batch_size": 4,
        "learning_rate": 2e-3, "tile_size": 128, "tiles_per_epoch": 1280, "defect_share": 0.9,
        "validate_every": 4, "hard_negative_share": 0.0}
VARIANTS = {
    "baseline": {},
    "squash": {"prepare": {"size": 128}},
    "scale_0.25": {"prepare": {"scale": 0.25}},
    "scale_1": {"prepare": {"scale": 1.0}},
    "lr_1e-3": {"train": {"learning_rate": 1e-3}},
    "lr_5e-4": {"train": {"learning_rate": 5e-4}},
    "defect_share_0.5": {"train": {"defect_share": 0.5}},
    "group_norm": {"train": {"normalization": "group"}},
    "validate_every_1": {"train": {"validate_every": 1}},
    "loss_bce": {"train": {"loss": "bce"}},
    "no_augmentation": {"train": {"augment": False}},
    "tiles_64": {"train": {"tile_size": 64, "tiles_per_epoch": 5120}},     # the same pixels in 4x smaller tiles
    "tiles_256": {"train": {"tile_size": 256, "tiles_per_epoch": 320}},    # ... in 4x larger tiles: whole photos
    # The two single changes that helped on the real set, together.
    "scale_0.25+lr_5e-4": {"prepare": {"scale": 0.25}, "train": {"learning_rate": 5e-4}},
    "squash+lr_5e-4": {"prepare": {"size": 128}, "train": {"learning_rate": 5e-4}},
    # The plant's call: tiles on good photos where the model fires, refreshed every epoch.
    "hard_negatives_0.1": {"train": {"hard_negative_share": 0.1}},      # every tile not on a defect
    "hard_negatives_0.05": {"train": {"hard_negative_share": 0.05}},    # half of them
    "lr_5e-4+hard_negatives_0.1": {"train": {"learning_rate": 5e-4, "hard_negative_share": 0.1}},
    "xla": {"train": {"jit_compile": True}},             # speed: does XLA learn the same?
}
REPORTED = ("dice", "dice_defective_parts", "auroc", "detection_rate", "false_alarm_rate")
# The table's "false alarms at 95% caught": located detection since the decision counts where a call
# points (rows made before, the magnetic-tile seeds, counted any detection; their JSON says so).


def prepared_folder(set_name: str, source: Path, options: dict) -> Path:
    """The set prepared with ``options`` (the automatic scale when empty), made if missing."""
    tag = "-".join(f"{k}{v:g}" for k, v in sorted(options.items())) or "auto"
    out = data_root() / "diagnosis" / set_name / f"prepared-{tag}"
    prepare(source, out, progress=False, **options)
    return out


def rule_scores(run: Path) -> dict:
    """Validation scores of each decision rule the run has (the region rule, and its part head)."""
    val = run_predictions(run, "val")
    rules = ("regions", "head") if val.part_scores is not None else ("regions",)
    found = {}
    for rule in rules:
        point = choose_operating_point(val, rule=rule)
        found[rule] = {"located_detection_rate": point.located_detection_rate,
                       "false_alarm_rate": point.false_alarm_rate, "false_alarms_at_95": false_alarms_at(val, rule),
                       "auroc": scores(val, point)["auroc"], "decision": point.describe()}
    return found


def run_variant(set_name: str, source: Path, name: str, seed: int, decision: str = "regions") -> dict:
    variant = VARIANTS[name]
    folder = prepared_folder(set_name, source, variant.get("prepare", {}))
    config = TrainConfig(**{**BASE, "decision": decision, **variant.get("train", {}), "seed": seed})
    tag = "" if decision == "regions" else f"-{decision}"
    run = train_or_reuse(folder, data_root() / "diagnosis" / set_name / "runs" / f"{name}{tag}-s{seed}", config,
                         verbose=0)
    history = read_history(run / "history.csv")
    # Scored again from the kept predictions with this version's decision code, so every row of the
    # table reads the same definitions (located detection, the margin) whatever made the run.
    predictions = run_predictions(run, "val")
    point = choose_operating_point(predictions, rule=decision)
    val = scores(predictions, point)
    metrics = {"operating_point": point.as_dict()}
    row = {"variant": name, "seed": seed, **{key: val[key] for key in REPORTED},
           "located_detection_rate": val["located_detection_rate"],
           "false_alarms_at_95": val["false_alarms_at_95"],
           "final_train_loss": history[-1]["loss"], "final_tile_iou": history[-1]["tile_iou"],
           "checkpoint_epoch": int(min((h for h in history if h["val_loss"] == h["val_loss"]),
                                       key=lambda h: h["val_loss"])["epoch"]) + 1,
           "geometry": load_run_config(run)["geometry"], "operating_point": metrics["operating_point"],
           "decision": decision, "rules": rule_scores(run), "good_parts": val["good_parts"],
           "defective_parts": val["defective_parts"],
           "train_seconds": load_run_config(run)["extra"]["train_seconds"]}
    print(f"{name:20s} seed {seed}: val Dice {row['dice']:.3f}, per part {row['dice_defective_parts']:.3f}, "
          f"AUROC {row['auroc']:.3f}, false alarms at 95% caught {row['false_alarms_at_95']:.0%}, final training "
          f"loss {row['final_train_loss']:.3f}, checkpoint epoch {row['checkpoint_epoch']} "
          f"({row['train_seconds']:.0f} s)", flush=True)
    return row


SUMMARISED = REPORTED + ("false_alarms_at_95", "final_train_loss", "train_seconds")
LABELS = {"dice": "val Dice", "dice_defective_parts": "Dice per defective part", "auroc": "AUROC",
          "false_alarms_at_95": "false alarms at 95% caught", "final_train_loss": "final training loss",
          "train_seconds": "train s"}


def change_text(variant: dict) -> str:
    parts = [f"prepare {k} {v:g}" for k, v in variant.get("prepare", {}).items()]
    parts += [f"{k} {v}" for k, v in variant.get("train", {}).items()]
    return ", ".join(parts) or "-"


def markdown_table(result: dict) -> str:
    formats = {"false_alarms_at_95": lambda v: f"{100 * v:.0f}%", "train_seconds": lambda v: f"{v:.0f}"}

    def cell(stats: dict, key: str) -> str:
        fmt = formats.get(key, lambda v: f"{v:.3f}")
        spread = "" if stats["min"] == stats["max"] else f" ({fmt(stats['min'])}-{fmt(stats['max'])})"
        return fmt(stats["mean"]) + spread

    lines = ["| variant | change | seeds | " + " | ".join(LABELS.values()) + " |", "|" + "---|" * (3 + len(LABELS))]
    for name, stats in result["summary"].items():
        lines.append(f"| {name} | {change_text(result['variants'][name])} | {stats['seeds']} | "
                     + " | ".join(cell(stats[key], key) for key in LABELS) + " |")
    return "\n".join(lines)


def rules_table(result: dict, variants=None) -> str:
    """The plant's call on validation, by rule, for the runs that have a part head: located
    detection and false alarms at the decision chosen with its margin (exact 95% intervals from
    the counts), and the false alarms at 95% caught where the defect is."""
    from scratch_utils.metrics import exact_interval
    lines = ["| variant | seed | decision | caught where the defect is | false alarms [95% interval] | "
             "false alarms at 95% located | AUROC |", "|" + "---|" * 7]
    for row in result["runs"]:
        if "head" not in row.get("rules", {}) or (variants and row["variant"] not in variants):
            continue
        good = row.get("good_parts")
        for rule in ("regions", "head"):
            r = row["rules"][rule]
            interval = ""
            if good:
                low, high = exact_interval(round(r["false_alarm_rate"] * good), good)
                interval = f" [{100 * low:.0f}%, {100 * high:.0f}%]"
            lines.append(f"| {row['variant']} | {row['seed']} | {r['decision']} | {100 * r['located_detection_rate']:.0f}% | "
                         f"{100 * r['false_alarm_rate']:.0f}%{interval} | {100 * r['false_alarms_at_95']:.0f}% | "
                         f"{r['auroc']:.3f} |")
    return "\n".join(lines)


def source_of(set_arg: str) -> tuple[str, Path]:
    """``NAME=FOLDER`` for photos of your own, or ``default`` for the synthetic default set."""
    if set_arg == "default":
        from scratch_utils.dataset import synthetic_source
        return "default", synthetic_source(get_profile("default"), progress=False)
    name, _, folder = set_arg.partition("=")
    return name, Path(folder).expanduser().resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="default, or NAME=FOLDER")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--decision", default="regions", choices=("regions", "head"),
                        help="head: train the part head too, and report both rules")
    args = parser.parse_args()
    set_name, source = source_of(args.set)
    rows = [run_variant(set_name, source, name, seed, args.decision) for seed in args.seeds for name in args.variants]
    out = HERE / "results" / f"diagnosis_{set_name}.json"
    previous = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    done = {(r["variant"], r["seed"], r.get("decision", "regions")) for r in rows}
    rows = [r for r in previous["runs"] if (r["variant"], r["seed"], r.get("decision", "regions")) not in done] + rows
    rows.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))
    result = {"benchmark": "diagnosis", "set": set_name, "base": BASE, "scored_on": "validation split, photo resolution",
              "variants": {name: VARIANTS[name] for name in dict.fromkeys(r["variant"] for r in rows)},
              "summary": summarise(rows, SUMMARISED), "runs": rows, "cpu_count": os.cpu_count(), "machine": platform.machine()}
    atomic_write_json(out, result)
    print(markdown_table(result))
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
