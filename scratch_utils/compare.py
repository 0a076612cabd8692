"""Model comparison: every trained model and the reference rows on one split, the curves, the
verdict and the results files (notebook 05).

Each run's decision was chosen on validation by ``train`` (:mod:`scratch_utils.decision`); the
test split is scored once at it. :func:`rule_row` adds the same run decided by another rule
(the region rule beside the part head), :func:`chosen_model` picks the model a plant would
pick without looking at test, and :func:`verdict` and :func:`rankings` say in words what the
rows say.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from .decision import (INTERMEDIATE_FALSE_ALARMS, TARGET_DETECTION, TARGET_FALSE_ALARMS, OperatingPoint,
                       choose_operating_point)
from .evaluation import SplitPredictions, per_image, pixel_curve, run_predictions, scores
from .files import atomic_write_json, atomic_write_text
from .runs import load_run_config, read_metrics


def precision_recall_curve(predictions: SplitPredictions) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (recall, precision) of the defect class at photo resolution over the threshold grid."""
    curve = pixel_curve(predictions)
    masked = predictions.stats["tp"].sum(axis=0) + predictions.stats["fp"].sum(axis=0) > 0
    # a threshold that masks nothing has no precision to plot (the table reports it as 1)
    return curve["recall"][masked], curve["precision"][masked]


def worst_cases(predictions: SplitPredictions, point: OperatingPoint, n: int = 4) -> list[int]:
    """Indices of the worst parts: missed or poorly segmented defects (lowest Dice first), then
    false alarms, the most confident first (the largest measure that decided the call), so ties
    among good parts are not broken by the order of their names."""
    rows = per_image(predictions, point)
    dice = np.array([row["dice"] for row in rows])
    called = np.array([row["called_defective"] for row in rows])
    decided_by = np.array([row["decided_by"] for row in rows])
    defective = predictions.is_defective
    ranked = [int(k) for k in np.argsort(dice, kind="stable") if defective[k]]
    false_alarms = [int(k) for k in np.argsort(-decided_by, kind="stable") if called[k] and not defective[k]]
    picks = ranked[: max(1, n - min(len(false_alarms), n // 2))]
    return (picks + false_alarms)[:n]


SCORES = ["dice", "dice_low", "dice_high", "iou", "miou", "tolerance_f1", "precision", "recall",
          "dice_defective_parts", "detection_rate", "detection_rate_low", "detection_rate_high",
          "located_detection_rate", "located_detection_rate_low", "located_detection_rate_high",
          "false_alarm_rate", "false_alarm_rate_low", "false_alarm_rate_high", "auroc", "false_alarms_at_95",
          "false_alarms_at_95_any", "defective_parts", "good_parts"]


def comparison_row(name: str, config: dict, metrics: dict) -> dict:
    """One row of the comparison from a run's ``config.json`` and ``metrics.json``."""
    extra, point = config.get("extra", {}), metrics["operating_point"]
    geometry = config.get("geometry", {})
    row = {"name": name, "model": config["model"], "loss": config["loss"], "epochs": config["epochs"],
           "encoder_weights": config.get("encoder_weights") or "",
           "input": (f"{geometry['size']} px square" if geometry.get("size")
                     else f"{geometry['extent']} px extent per photo, {extra.get('tile_size')} px tiles"
                     if geometry.get("extent")
                     else f"scale {geometry.get('scale'):g}, {extra.get('tile_size')} px tiles"),
           "parameters": extra.get("parameters"), "train_seconds": extra.get("train_seconds"),
           "train_tiles_per_s": extra.get("train_tiles_per_s"),
           "inference_ms_per_photo": metrics.get("inference_ms_per_photo"),
           "mask_threshold": point["mask_threshold"], "decision_threshold": point["decision_threshold"],
           "min_region": point["min_region"], "region_measure": point["region_measure"],
           "rule": point.get("rule", "regions"), "decision": OperatingPoint.from_dict(point).describe(),
           "target_met_on_val": point["target_met"], "detection_target_met_on_val": point["detection_target_met"],
           "warnings": len(metrics.get("warnings", [])), "improving_at_end": metrics.get("improving_at_end")}
    return {**row, **split_scores(metrics["val"], metrics["test"])}


def run_row(name: str, run) -> dict:
    """The comparison row of a run folder."""
    return comparison_row(name, load_run_config(run), read_metrics(run))


def split_scores(val: dict, test: dict) -> dict:
    """The comparison's score columns (``val_*``, ``test_*``) from each split's scores."""
    return {f"{split}_{key}": values.get(key, float("nan"))
            for split, values in (("val", val), ("test", test)) for key in SCORES}


RULE_ROW_SUFFIX = "_rule"   # unet_regions_rule, unet_head_rule: a run decided again by another rule


def rule_row(name: str, run, rule: str = "regions", measures=("length", "area")) -> dict:
    """A run's comparison row with its decision chosen again on validation by another ``rule``
    (the region rule, by default, beside a run decided by its part head; ``measures`` limits
    the region rule to one measure), so the table shows what each decision adds."""
    val, test = run_predictions(run, "val"), run_predictions(run, "test")
    point = choose_operating_point(val, rule=rule, measures=measures)
    metrics = {**read_metrics(run), "val": scores(val, point), "test": scores(test, point),
               "operating_point": point.as_dict()}
    return comparison_row(name, load_run_config(run), metrics)


def chosen_model(rows: list[dict]) -> dict:
    """The model a plant would pick without looking at test: among the trained models, the
    fewest validation false alarms among those catching the target where the defect is on
    validation (else the most caught there), ties to the higher validation Dice."""
    models = [r for r in rows if r.get("epochs")]
    return min(models, key=lambda r: (not r["detection_target_met_on_val"], r["val_false_alarm_rate"]
                                      if r["detection_target_met_on_val"] else -r["val_located_detection_rate"],
                                      -r["val_dice"]))


def verdict(rows: list[dict]) -> str:
    """The comparison's conclusion in words, written from the rows: the model chosen on
    validation, its test result against the plant's target (caught where the defect is, false
    alarms), and the ridge filter beside it."""
    rows = [as_published(row) for row in rows]
    best = chosen_model(rows)

    def rate(row, key):
        value = row[f"test_{key}"]
        # 94.7% printed as "95%" would read as the target reached: one decimal where rounding crosses it
        crosses = key == "located_detection_rate" and (round(value, 2) >= TARGET_DETECTION) != (value >= TARGET_DETECTION)
        return (f"{value:.1%}" if crosses else f"{value:.0%}") + (f" (95% interval {row[f'test_{key}_low']:.0%}-"
                                                                    f"{row[f'test_{key}_high']:.0%})")

    def meets(false_alarm_limit: float) -> bool:
        return (best["test_located_detection_rate"] >= TARGET_DETECTION
                and best["test_false_alarm_rate"] <= false_alarm_limit)

    met = meets(TARGET_FALSE_ALARMS)
    lines = [f"Chosen on validation: {best['name']} ({best['decision']}). On the test parts it catches "
             f"{rate(best, 'located_detection_rate')} of the defective parts where the defect is "
             f"({best['test_detection_rate']:.0%} in all) and flags {rate(best, 'false_alarm_rate')} of the good parts.",
             f"The plant's target ({TARGET_DETECTION:.0%} caught where the defect is, at most "
             f"{TARGET_FALSE_ALARMS:.0%} false alarms) " + ("is met." if met else "is not met.")
             + ("" if met else f" The intermediate goal (at most {INTERMEDIATE_FALSE_ALARMS:.0%} false alarms) "
                + ("is met." if meets(INTERMEDIATE_FALSE_ALARMS) else "is not met either."))]
    ridge = next((r for r in rows if r["name"] == "ridge_filter"), None)
    if ridge:
        beyond = best["test_false_alarm_rate_high"] < ridge["test_false_alarm_rate_low"]
        lines.append(f"The training-free ridge filter catches {rate(ridge, 'located_detection_rate')} where the "
                     f"defect is and flags {rate(ridge, 'false_alarm_rate')} of the good parts: {best['name']} has "
                     + ("fewer false alarms, beyond both intervals." if beyond else
                        "no fewer false alarms beyond the intervals."))
    return "\n".join(lines)


RANKED = {"val_dice": "validation Dice", "test_dice": "test Dice",
          "test_dice_defective_parts": "test Dice per defective part", "val_auroc": "validation AUROC",
          "test_auroc": "test AUROC"}


def rankings(rows: list[dict]) -> list[str]:
    """Sentences that rank the trained models, written from the rows (the README and notebook
    05 print these rather than state a ranking by hand)."""
    rows = [as_published(row) for row in rows]
    models = [r for r in rows if r.get("epochs") and not r["name"].endswith(RULE_ROW_SUFFIX)]
    lines = []
    for key, label in RANKED.items():
        first, second = sorted(models, key=lambda r: -r[key])[:2]
        line = (f"Highest {label}: {first['name']} ({first[key]:.3f}), then "
                f"{second['name']} ({second[key]:.3f})")
        if key == "test_dice" and first["test_dice_low"] <= second["test_dice_high"]:
            line += ": their 95% intervals overlap, so the test split does not tell them apart"
        elif round(first[key], 2) == round(second[key], 2):
            line += ": equal at the table's two decimals, so this is no ranking"
        lines.append(line + ".")
    by_name = {r["name"]: r for r in rows}
    if {"unet", "unet_squashed"} <= set(by_name):
        unet, squash = by_name["unet"], by_name["unet_squashed"]
        pairs = ", ".join(f"{label} {unet[key]:.3f} against {squash[key]:.3f}" for key, label in RANKED.items())
        # compared at the three decimals printed, so a reader never sees "0.894 against 0.894" called a trail
        behind = [label for key, label in RANKED.items() if round(unet[key], 3) < round(squash[key], 3)]
        equal = [label for key, label in RANKED.items() if round(unet[key], 3) == round(squash[key], 3)]
        lines.append(f"Working-scale U-Net against the 128-px squash: {pairs}; "
                     + (f"the U-Net trails on {', '.join(behind)}" if behind else "the U-Net scores at least as well on each")
                     + (f" (equal on {', '.join(equal)})." if equal else "."))
    other = next((r for r in rows if r["name"].startswith("unet_") and r["name"].endswith(RULE_ROW_SUFFIX)), None)
    if "unet" in by_name and other:
        unet = by_name["unet"]
        lines.append(f"U-Net decided by {unet['decision'].split(' ≥')[0]} against {other['decision'].split(' ≥')[0]}, "
                     f"same run: false alarms on validation {unet['val_false_alarm_rate']:.0%} against "
                     f"{other['val_false_alarm_rate']:.0%}, on test {unet['test_false_alarm_rate']:.0%} against "
                     f"{other['test_false_alarm_rate']:.0%}; caught where the defect is on test "
                     f"{unet['test_located_detection_rate']:.0%} against {other['test_located_detection_rate']:.0%}.")
    return lines


def as_published(row: dict) -> dict:
    """A row as ``results/`` holds it: numbers rounded to 4 places, NaN as None. The verdict and
    rankings are written from these, so the notebook and the README print the same digits."""
    def clean(value):
        if isinstance(value, float):
            return round(value, 4) if math.isfinite(value) else None
        return value
    return {k: clean(v) for k, v in row.items()}


def write_results(rows: list[dict], folder: Path) -> tuple[Path, Path]:
    """``comparison.csv`` and ``comparison.json`` (:func:`as_published`)."""
    folder = Path(folder)
    rows = [as_published(row) for row in rows]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, json_path = folder / "comparison.csv", folder / "comparison.json"
    atomic_write_text(csv_path, table.getvalue())
    atomic_write_json(json_path, {"target_detection_rate": TARGET_DETECTION, "models": rows})
    return csv_path, json_path


def read_results(folder: Path) -> list[dict]:
    return json.loads((Path(folder) / "comparison.json").read_text())["models"]


def summary_lines(rows: list[dict]) -> list[str]:
    """The result a training notebook ends with, written from its comparison rows: test Dice,
    the plant's pair (caught where the defect is, false alarms, exact intervals), and whether
    each run was still improving when its budget ran out."""
    rows = [as_published(row) for row in rows]

    def pair(row):
        return (f"{row['name']} {row['test_located_detection_rate']:.0%} "
                f"[{row['test_located_detection_rate_low']:.0%}, {row['test_located_detection_rate_high']:.0%}] / "
                f"{row['test_false_alarm_rate']:.0%} [{row['test_false_alarm_rate_low']:.0%}, "
                f"{row['test_false_alarm_rate_high']:.0%}]")
    return [
        "Test Dice, pooled (per defective part): " + "; ".join(
            f"{r['name']} {r['test_dice']:.2f} ({r['test_dice_defective_parts']:.2f})" for r in rows) + ".",
        f"Caught where the defect is / false alarms on test (target {TARGET_DETECTION:.0%} / "
        f"{TARGET_FALSE_ALARMS:.0%}, 95% intervals): " + "; ".join(pair(r) for r in rows) + ".",
        _trend_line(rows),
    ]


def _trend_line(rows: list[dict]) -> str:
    """Which runs were still improving at their last scored epoch, and for which it is not known."""
    trained = [r for r in rows if r.get("epochs")]
    improving = [r["name"] for r in trained if r.get("improving_at_end")]
    unknown = [r["name"] for r in trained if r.get("improving_at_end") is None]
    known = len(trained) - len(unknown)
    if improving:
        line = ("Still improving when the budget ran out (validation loss lower at the last scored epoch): "
                + ", ".join(improving) + ".")
    elif known:
        line = (("No run scored twice" if unknown else "No run") + " was still improving at its last "
                "scored epoch (its validation loss had stopped falling).")
    else:
        line = ""
    if unknown:
        line += (" " if line else "") + ("Not known for " + ", ".join(unknown)
                                         + " (validation scored once: nothing to compare the last epoch with).")
    return line


def split_resolution(rows: list[dict], split: str = "test") -> str:
    """What a split can resolve, in words: its parts, and the exact interval of a model with no
    false alarm at all (the smallest false-alarm rate the split can tell from zero)."""
    from .metrics import exact_interval
    row = next(r for r in rows if r.get("epochs"))
    defective, good = int(row[f"{split}_defective_parts"]), int(row[f"{split}_good_parts"])
    _, high = exact_interval(0, good)
    return (f"The {split} split holds {defective} defective and {good} good parts, generated apart from the "
            f"training parts: one good part is {1 / good:.1%} of the false alarms, and a model with none at all "
            f"would still have an exact 95% interval reaching {high:.1%}, the smallest false-alarm rate this "
            f"split can resolve.")
