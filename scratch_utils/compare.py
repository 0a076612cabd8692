"""Model comparison: operating points chosen on validation data, curves, tables (notebook 05).

The plant's question is part-level: catch at least 95% of defective parts with as few
false alarms on good parts as possible. A part is called defective when one connected region
of pixels at or above the ``decision_threshold`` reaches ``min_region`` pixels by its
``region_measure``: the length of its skeleton (a scratch is long and thin, a dust speck
compact) or its area (kept as a comparison row, ``unet_area_rule``). All three are
picked on the validation split. The mask a user sees (and every pixel score) uses its own
``mask_threshold``, the one with the best validation Dice: a threshold low enough to catch
faint scratches paints masks too wide. Then the test split is scored once at that point.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from .evaluation import SplitPredictions, per_image, pixel_curve, run_predictions, scores
from .files import atomic_write_json, atomic_write_text
from .metrics import REGION_MEASURES, called_defective, detection_rates
from .runs import TARGET_DETECTION, TARGET_FALSE_ALARMS, OperatingPoint, load_run_config, read_metrics

# Minimum defect regions, in pixels at model resolution (of skeleton length or of area): a dust
# speck measures a few, a scratch dozens. 1 is a real limit; the top is past any region seen.
MIN_REGIONS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)


def choose_mask_threshold(predictions: SplitPredictions) -> float:
    """The threshold of the grid with the best pooled pixel Dice (ties: the lower one)."""
    curve = pixel_curve(predictions)
    return float(curve["thresholds"][int(np.argmax(curve["dice"]))])


def decision_grid(predictions: SplitPredictions, min_regions=MIN_REGIONS, measures=REGION_MEASURES):
    """(detection rate, false-alarm rate, decision threshold, min region, measure) for every
    combination of the grid the decision is searched on."""
    is_defective = predictions.is_defective
    for measure in measures:
        sizes = predictions.stats[measure]
        for k, threshold in enumerate(predictions.thresholds):
            for min_region in min_regions:
                rates = detection_rates(is_defective, called_defective(sizes[:, k], min_region))
                yield (rates["detection_rate"], rates["false_alarm_rate"], float(threshold), int(min_region),
                       measure)


def choose_operating_point(predictions: SplitPredictions, target: float = TARGET_DETECTION,
                           min_regions=MIN_REGIONS, measures=REGION_MEASURES) -> OperatingPoint:
    """Lowest false-alarm rate among the (threshold, min region, measure) combinations of the
    grid that catch ``target`` of the defective parts; ties go to the higher threshold, then
    the larger region (the stricter rule), then the measure listed first (length). If none
    reaches the target, the one with the highest detection rate (the plant's priority), ties
    to fewer false alarms. The mask threshold is chosen apart, for the best Dice."""
    candidates = list(decision_grid(predictions, min_regions, measures))
    order = {measure: rank for rank, measure in enumerate(measures)}
    meeting = [c for c in candidates if c[0] >= target]
    if meeting:
        chosen = min(meeting, key=lambda c: (c[1], -c[2], -c[3], order[c[4]]))
    else:
        chosen = max(candidates, key=lambda c: (c[0], -c[1], c[2], -order[c[4]]))
    detection, false_alarm, threshold, min_region, measure = chosen
    return OperatingPoint(mask_threshold=choose_mask_threshold(predictions), decision_threshold=threshold,
                          min_region=min_region, region_measure=measure, detection_rate=detection,
                          false_alarm_rate=false_alarm, detection_target_met=bool(meeting),
                          target_met=bool(meeting) and false_alarm <= TARGET_FALSE_ALARMS, target=target)


MOSTLY_MASKED = 0.5          # a good photo with half its pixels masked is "mostly masked"
HIGH_FALSE_ALARMS = 0.5      # a decision flagging more good parts than this has not learned the defect
LOW_DICE = 0.1


def learning_warnings(predictions: SplitPredictions, point: OperatingPoint,
                      min_regions=MIN_REGIONS) -> list[str]:
    """What says that a model has not learned the defect, from its validation predictions at
    its operating point: each warning names the cause and what to try (``train`` prints them
    and writes them into ``metrics.json``)."""
    s, thresholds = predictions.stats, predictions.thresholds
    k = list(thresholds).index(point.mask_threshold)
    good = ~predictions.is_defective
    warnings = []
    at_edge = [f"threshold {point.decision_threshold:g}" for edge in (thresholds[0], thresholds[-1])
               if point.decision_threshold == edge] + [
        f"minimum region {point.min_region} px" for edge in (min_regions[-1],) if point.min_region == edge]
    if at_edge:
        warnings.append(f"the decision sits at the edge of its search grid ({', '.join(at_edge)}): the model's "
                        f"probabilities do not separate defective from good parts inside the grid; train longer, "
                        f"check the masks, or look at the validation galleries")
    if good.any() and point.false_alarm_rate > HIGH_FALSE_ALARMS:
        warnings.append(f"the decision flags {point.false_alarm_rate:.0%} of the good validation parts to catch "
                        f"{point.detection_rate:.0%} of the defective ones: the model fires on good surface; "
                        f"train longer or on more good parts, or check that good parts have empty masks")
    masked = s["fp"][good, k] / np.maximum(s["pixels"][good], 1)
    if good.any() and np.mean(masked >= MOSTLY_MASKED) > 0.1:
        warnings.append(f"{np.mean(masked >= MOSTLY_MASKED):.0%} of the good validation photos are mostly masked "
                        f"(at least half their pixels): the model paints surface as defect; check the masks "
                        f"(a mask that is not empty on a good part teaches that) and the working scale")
    dice = float(pixel_curve(predictions)["dice"][k])
    if predictions.is_defective.any() and dice < LOW_DICE:
        warnings.append(f"validation Dice is {dice:.2f}: the masks barely overlap the defects; train longer, or "
                        f"check the working scale (preparation.json) and the masks")
    return warnings


def detection_curve(predictions: SplitPredictions, min_regions=MIN_REGIONS,
                    measures=REGION_MEASURES) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rates, detection rates): the best detection rate reachable at each
    false-alarm rate over the whole grid the operating point is searched on (every pixel
    threshold x every minimum region x every measure), so a chosen point lies on or under
    the curve."""
    points = {}
    for detection, false_alarm, *_ in decision_grid(predictions, min_regions, measures):
        points[false_alarm] = max(points.get(false_alarm, 0.0), detection)
    points.setdefault(0.0, 0.0)
    points.setdefault(1.0, 1.0)
    false_alarms = np.array(sorted(points))
    detections = np.maximum.accumulate(np.array([points[fa] for fa in false_alarms]))
    return false_alarms, detections


def precision_recall_curve(predictions: SplitPredictions) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (recall, precision) of the defect class at photo resolution over the threshold grid."""
    curve = pixel_curve(predictions)
    masked = predictions.stats["tp"].sum(axis=0) + predictions.stats["fp"].sum(axis=0) > 0
    # a threshold that masks nothing has no precision to plot (the table reports it as 1)
    return curve["recall"][masked], curve["precision"][masked]


def worst_cases(predictions: SplitPredictions, point: OperatingPoint, n: int = 4) -> list[int]:
    """Indices of the worst parts: missed or poorly segmented defects, then false alarms."""
    rows = per_image(predictions, point)
    dice = np.array([row["dice"] for row in rows])
    called = np.array([row["called_defective"] for row in rows])
    defective = predictions.is_defective
    ranked = [int(k) for k in np.argsort(dice, kind="stable") if defective[k]]
    false_alarms = [int(k) for k in np.where(called & ~defective)[0]]
    picks = ranked[: max(1, n - min(len(false_alarms), n // 2))]
    return (picks + false_alarms)[:n]


SCORES = ["dice", "dice_low", "dice_high", "iou", "miou", "tolerance_f1", "precision", "recall",
          "dice_defective_parts", "detection_rate", "detection_rate_low", "detection_rate_high",
          "located_detection_rate", "false_alarm_rate", "false_alarm_rate_low", "false_alarm_rate_high",
          "auroc"]


def comparison_row(name: str, config: dict, metrics: dict) -> dict:
    """One row of the comparison from a run's ``config.json`` and ``metrics.json``."""
    extra, point = config.get("extra", {}), metrics["operating_point"]
    geometry = config.get("geometry", {})
    row = {"name": name, "model": config["model"], "loss": config["loss"], "epochs": config["epochs"],
           "encoder_weights": config.get("encoder_weights") or "",
           "input": (f"{geometry['size']} px square" if geometry.get("size")
                     else f"scale {geometry.get('scale'):g}, {extra.get('tile_size')} px tiles"),
           "parameters": extra.get("parameters"), "train_seconds": extra.get("train_seconds"),
           "train_tiles_per_s": extra.get("train_tiles_per_s"),
           "inference_ms_per_photo": metrics.get("inference_ms_per_photo"),
           "mask_threshold": point["mask_threshold"], "decision_threshold": point["decision_threshold"],
           "min_region": point["min_region"], "region_measure": point["region_measure"],
           "target_met_on_val": point["target_met"], "detection_target_met_on_val": point["detection_target_met"],
           "warnings": len(metrics.get("warnings", []))}
    return {**row, **split_scores(metrics["val"], metrics["test"])}


def split_scores(val: dict, test: dict) -> dict:
    """The comparison's score columns (``val_*``, ``test_*``) from each split's scores."""
    return {f"{split}_{key}": values.get(key, float("nan"))
            for split, values in (("val", val), ("test", test)) for key in SCORES}


def rule_row(name: str, run, measures=("area",)) -> dict:
    """A run's comparison row with its decision chosen again on validation among ``measures``
    only (the one-region area rule by default), so the table shows what the length rule adds."""
    val, test = run_predictions(run, "val"), run_predictions(run, "test")
    point = choose_operating_point(val, measures=measures)
    metrics = {**read_metrics(run), "val": scores(val, point), "test": scores(test, point),
               "operating_point": point.as_dict()}
    return comparison_row(name, load_run_config(run), metrics)


INTERMEDIATE_FALSE_ALARMS = 0.20   # the milestone on the way there


def chosen_model(rows: list[dict]) -> dict:
    """The model a plant would pick without looking at test: among the trained models, the
    fewest validation false alarms among those meeting the target on validation (else the
    most caught), ties to the higher validation Dice."""
    models = [r for r in rows if r.get("epochs")]
    return min(models, key=lambda r: (not r["detection_target_met_on_val"], r["val_false_alarm_rate"]
                                      if r["detection_target_met_on_val"] else -r["val_detection_rate"],
                                      -r["val_dice"]))


def verdict(rows: list[dict]) -> str:
    """The comparison's conclusion in words, written from the rows: the model chosen on
    validation, its test result against the plant's target, and the ridge filter beside it."""
    best = chosen_model(rows)

    def rate(row, key):
        return (f"{row[f'test_{key}']:.0%} (95% interval {row[f'test_{key}_low']:.0%}-"
                f"{row[f'test_{key}_high']:.0%})")

    def meets(false_alarm_limit: float) -> bool:
        return best["test_detection_rate"] >= TARGET_DETECTION and best["test_false_alarm_rate"] <= false_alarm_limit

    met = meets(TARGET_FALSE_ALARMS)
    lines = [f"Chosen on validation: {best['name']}. On the test parts it catches "
             f"{rate(best, 'detection_rate')} of the defective parts, {best['test_located_detection_rate']:.0%} "
             f"where the defect is, and flags {rate(best, 'false_alarm_rate')} of the good parts.",
             f"The plant's target ({TARGET_DETECTION:.0%} caught with at most {TARGET_FALSE_ALARMS:.0%} false alarms) "
             + ("is met." if met else "is not met.")
             + ("" if met else f" The intermediate goal ({TARGET_DETECTION:.0%} caught with at most "
                f"{INTERMEDIATE_FALSE_ALARMS:.0%} false alarms) "
                + ("is met." if meets(INTERMEDIATE_FALSE_ALARMS) else "is not met either."))]
    ridge = next((r for r in rows if r["name"] == "ridge_filter"), None)
    if ridge:
        beyond = best["test_false_alarm_rate_high"] < ridge["test_false_alarm_rate_low"]
        lines.append(f"The training-free ridge filter catches {rate(ridge, 'detection_rate')} and flags "
                     f"{rate(ridge, 'false_alarm_rate')} of the good parts: {best['name']} has "
                     + ("fewer false alarms, beyond both intervals." if beyond else
                        "no fewer false alarms beyond the intervals."))
    return "\n".join(lines)


RANKED = {"val_dice": "validation Dice", "test_dice": "test Dice",
          "test_dice_defective_parts": "test Dice per defective part", "val_auroc": "validation AUROC",
          "test_auroc": "test AUROC"}


def rankings(rows: list[dict]) -> list[str]:
    """Sentences that rank the trained models, written from the rows (the README and notebook
    05 print these rather than state a ranking by hand)."""
    models = [r for r in rows if r.get("epochs") and r["name"] != "unet_area_rule"]
    lines = []
    for key, label in RANKED.items():
        first, second = sorted(models, key=lambda r: -r[key])[:2]
        line = (f"Highest {label}: {first['name']} ({first[key]:.3f}), then "
                f"{second['name']} ({second[key]:.3f})")
        if key == "test_dice" and first["test_dice_low"] <= second["test_dice_high"]:
            line += ": their 95% intervals overlap, so the test split does not tell them apart"
        lines.append(line + ".")
    by_name = {r["name"]: r for r in rows}
    if {"unet", "unet_squashed"} <= set(by_name):
        unet, squash = by_name["unet"], by_name["unet_squashed"]
        pairs = ", ".join(f"{label} {unet[key]:.3f} against {squash[key]:.3f}" for key, label in RANKED.items())
        behind = [label for key, label in RANKED.items() if unet[key] < squash[key]]
        lines.append(f"Working-scale U-Net against the 128-px squash: {pairs}; "
                     + (f"the U-Net trails on {', '.join(behind)}." if behind else "the U-Net scores at least as well on each."))
    if {"unet", "unet_area_rule"} <= set(by_name):
        length, area = by_name["unet"], by_name["unet_area_rule"]
        lines.append(f"U-Net decision by region length against region area: false alarms on test "
                     f"{length['test_false_alarm_rate']:.0%} against {area['test_false_alarm_rate']:.0%}, "
                     f"caught {length['test_detection_rate']:.0%} against {area['test_detection_rate']:.0%}.")
    return lines


def write_results(rows: list[dict], folder: Path) -> tuple[Path, Path]:
    """``comparison.csv`` and ``comparison.json`` (numbers rounded to 4 places)."""
    folder = Path(folder)

    def clean(value):
        if isinstance(value, float):
            return round(value, 4) if math.isfinite(value) else None
        return value

    rows = [{k: clean(v) for k, v in row.items()} for row in rows]
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
