"""Model comparison: operating points chosen on validation data, curves, tables (notebook 05).

The plant's question is image-level: catch at least 95% of defective parts with as few
false alarms on good parts as possible. A part is called defective when one connected region
of pixels at or above the decision ``threshold`` covers at least ``min_area`` pixels; both are
picked on the validation split. The mask a user sees (and every pixel score) uses its own
``mask_threshold``, the one with the best validation Dice: a threshold low enough to catch
faint scratches paints masks too wide. Then the test split is scored once at that point.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .evaluation import SplitPredictions, per_image, pixel_curve
from .files import atomic_write_json, atomic_write_text
from .metrics import called_defective, detection_rates

# Minimum defect regions, in pixels at model resolution: a dust speck covers a few, a scratch dozens.
MIN_AREAS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
TARGET_DETECTION = 0.95


@dataclass
class OperatingPoint:
    threshold: float               # decision: pixel threshold ...
    min_area: int                  # ... and the smallest region (px at model resolution) called a defect
    detection_rate: float          # on the split it was chosen on (validation)
    false_alarm_rate: float
    target_met: bool
    target: float = TARGET_DETECTION
    mask_threshold: float | None = None   # the mask shown and scored; None: ``threshold``

    def __post_init__(self):
        if self.mask_threshold is None:
            self.mask_threshold = self.threshold


def choose_mask_threshold(predictions: SplitPredictions) -> float:
    """The threshold of the grid with the best pooled pixel Dice (ties: the lower one)."""
    curve = pixel_curve(predictions)
    return float(curve["thresholds"][int(np.argmax(curve["dice"]))])


def choose_operating_point(predictions: SplitPredictions, target: float = TARGET_DETECTION,
                           min_areas=MIN_AREAS) -> OperatingPoint:
    """Lowest false-alarm rate among the (threshold, min_area) pairs of the grid that catch
    ``target`` of the defective parts; ties go to the higher threshold, then the larger area
    (the stricter rule). If none reaches the target, the pair with the highest detection
    rate (the plant's priority), ties to fewer false alarms. The mask threshold is chosen
    apart, for the best Dice."""
    regions, is_defective = predictions.stats["region"], predictions.is_defective
    candidates = []
    for k, threshold in enumerate(predictions.thresholds):
        for min_area in min_areas:
            rates = detection_rates(is_defective, called_defective(regions[:, k], min_area))
            candidates.append((rates["detection_rate"], rates["false_alarm_rate"],
                               float(threshold), int(min_area)))
    meeting = [c for c in candidates if c[0] >= target]
    if meeting:
        detection, false_alarm, threshold, min_area = min(
            meeting, key=lambda c: (c[1], -c[2], -c[3]))
    else:
        detection, false_alarm, threshold, min_area = max(
            candidates, key=lambda c: (c[0], -c[1], c[2]))
    return OperatingPoint(threshold, min_area, detection, false_alarm, bool(meeting), target,
                          mask_threshold=choose_mask_threshold(predictions))


def detection_curve(predictions: SplitPredictions, min_areas=MIN_AREAS) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rates, detection rates): the best detection rate reachable at each
    false-alarm rate over the whole grid the operating point is searched on (every pixel
    threshold x every minimum region), so a chosen point lies on or under the curve."""
    regions, defective = predictions.stats["region"], predictions.is_defective
    points = {}
    for k in range(len(predictions.thresholds)):
        for level in min_areas:
            rates = detection_rates(defective, called_defective(regions[:, k], level))
            fa, dr = rates["false_alarm_rate"], rates["detection_rate"]
            points[fa] = max(points.get(fa, 0.0), dr)
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
           "mask_threshold": point.get("mask_threshold", point["threshold"]),
           "threshold": point["threshold"], "min_area": point["min_area"],
           "target_met_on_val": point["target_met"]}
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



README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


README_COLUMNS = {
    "name": "model", "loss": "loss", "encoder": "encoder", "input": "input", "epochs": "epochs",
    "params": "params", "train_min": "train min", "infer_ms": "infer ms/photo",
    "mask_threshold": "mask threshold", "decision": "decision: threshold / min region",
    "val_point": "val: caught / false alarms", "test_dice": "Dice", "test_iou": "IoU",
    "test_miou": "mIoU", "test_tolerance_f1": "tol. F1", "test_precision": "precision",
    "test_recall": "recall", "test_detection_rate": "caught", "test_false_alarm_rate": "false alarms",
    "test_auroc": "AUROC"}


def markdown_table(rows: list[dict]) -> str:
    """The README's results table: costs, then test scores at the validation-chosen point."""
    from .report import Table
    shown = []
    for r in rows:
        shown.append({**r, "encoder": r["encoder_weights"] or "-",
                      "params": f"{r['parameters'] / 1e6:.2f} M",
                      "train_min": f"{r['train_seconds'] / 60:.1f}",
                      "infer_ms": f"{r['inference_ms_per_photo']:.0f}",
                      "mask_threshold": f"{r['mask_threshold']:.2f}",
                      "decision": f"{r['threshold']:.2f} / {r['min_area']} px",
                      "val_point": f"{r['val_detection_rate']:.0%} / {r['val_false_alarm_rate']:.0%}"
                                   + ("" if r["target_met_on_val"] else " (target missed)")})
    return Table(shown, README_COLUMNS, percent=("test_detection_rate", "test_false_alarm_rate")
                 ).to_markdown()


def update_readme(readme: Path, rows: list[dict]) -> bool:
    """Replace the text between the results markers of the README; False if no markers."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    before, rest = text.split(README_START, 1)
    _, after = rest.split(README_END, 1)
    atomic_write_text(readme, f"{before}{README_START}\n{markdown_table(rows)}\n{README_END}{after}")
    return True
