"""Model comparison: operating points chosen on validation data, curves, tables (notebook 05).

The plant's question is part-level: catch at least 95% of defective parts with as few
false alarms on good parts as possible. A part is called defective when one connected region
of pixels at or above the ``decision_threshold`` covers at least ``min_region`` pixels; both are
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

from .evaluation import SplitPredictions, per_image, pixel_curve
from .files import atomic_write_json, atomic_write_text
from .metrics import called_defective, detection_rates
from .runs import TARGET_DETECTION, OperatingPoint

# Minimum defect regions, in pixels at model resolution: a dust speck covers a few, a scratch dozens.
MIN_REGIONS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def choose_mask_threshold(predictions: SplitPredictions) -> float:
    """The threshold of the grid with the best pooled pixel Dice (ties: the lower one)."""
    curve = pixel_curve(predictions)
    return float(curve["thresholds"][int(np.argmax(curve["dice"]))])


def decision_grid(predictions: SplitPredictions, min_regions=MIN_REGIONS):
    """(detection rate, false-alarm rate, decision threshold, min region) for every pair of
    the grid the decision is searched on."""
    regions, is_defective = predictions.stats["region"], predictions.is_defective
    for k, threshold in enumerate(predictions.thresholds):
        for min_region in min_regions:
            rates = detection_rates(is_defective, called_defective(regions[:, k], min_region))
            yield rates["detection_rate"], rates["false_alarm_rate"], float(threshold), int(min_region)


def choose_operating_point(predictions: SplitPredictions, target: float = TARGET_DETECTION,
                           min_regions=MIN_REGIONS) -> OperatingPoint:
    """Lowest false-alarm rate among the (threshold, min region) pairs of the grid that catch
    ``target`` of the defective parts; ties go to the higher threshold, then the larger region
    (the stricter rule). If none reaches the target, the pair with the highest detection
    rate (the plant's priority), ties to fewer false alarms. The mask threshold is chosen
    apart, for the best Dice."""
    candidates = list(decision_grid(predictions, min_regions))
    meeting = [c for c in candidates if c[0] >= target]
    if meeting:
        detection, false_alarm, threshold, min_region = min(meeting, key=lambda c: (c[1], -c[2], -c[3]))
    else:
        detection, false_alarm, threshold, min_region = max(candidates, key=lambda c: (c[0], -c[1], c[2]))
    return OperatingPoint(mask_threshold=choose_mask_threshold(predictions), decision_threshold=threshold,
                          min_region=min_region, detection_rate=detection, false_alarm_rate=false_alarm,
                          target_met=bool(meeting), target=target)


def detection_curve(predictions: SplitPredictions, min_regions=MIN_REGIONS) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rates, detection rates): the best detection rate reachable at each
    false-alarm rate over the whole grid the operating point is searched on (every pixel
    threshold x every minimum region), so a chosen point lies on or under the curve."""
    points = {}
    for detection, false_alarm, _, _ in decision_grid(predictions, min_regions):
        points[false_alarm] = max(points.get(false_alarm, 0.0), detection)
    points.setdefault(0.0, 0.0)
    points.setdefault(1.0, 1.0)
    false_alarms = np.array(sorted(points))
    detections = np.maximum.accumulate(np.array([points[fa] for fa in false_alarms]))
    return false_alarms, detections


def precision_recall_curve(predictions: SplitPredictions) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (recall, precision) of the defect class at photo resolution over the threshold grid."""
    curve = pixel_curve(predictions)
    return curve["recall"], curve["precision"]


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


SCORES = ["dice", "iou", "miou", "tolerance_f1", "precision", "recall", "detection_rate",
          "false_alarm_rate", "auroc"]


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
           "min_region": point["min_region"], "target_met_on_val": point["target_met"]}
    for split in ("val", "test"):
        for key in SCORES:
            row[f"{split}_{key}"] = metrics[split][key]
    return row


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
