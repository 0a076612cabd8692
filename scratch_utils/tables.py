"""The course's tables: one formatter for notebooks (HTML), the README (Markdown) and a terminal."""
from __future__ import annotations

import html
import math

import numpy as np


class Table:
    """The course's one table formatter: rows of dicts shown with full column headers and
    sensible rounding, as HTML in a notebook, Markdown in the README, aligned text elsewhere.

    ``columns`` maps a row key to its header (default: the keys); values are formatted by
    type: floats to ``digits`` places, keys in ``percent`` as percentages, ints with
    thousands separators, missing values as a dash. Strings are shown as they are."""

    def __init__(self, rows, columns: dict | list | None = None, digits: int = 3, percent=()):
        rows = [dict(row) for row in rows]
        if isinstance(columns, dict):
            self.columns = dict(columns)
        else:
            keys = columns or list(dict.fromkeys(k for row in rows for k in row))
            self.columns = {key: key for key in keys}
        self.rows, self.digits, self.percent = rows, digits, set(percent)

    @classmethod
    def from_named(cls, named: dict, name_header: str = "", **kwargs) -> "Table":
        """A table from ``{row name: {key: value}}``; the names become the first column."""
        columns = kwargs.pop("columns", None)
        rows = [{"_name": name, **values} for name, values in named.items()]
        if isinstance(columns, dict):
            columns = {"_name": name_header, **columns}
        elif columns is not None:
            columns = {"_name": name_header, **{key: key for key in columns}}
        return cls(rows, columns, **kwargs)

    def cell(self, key: str, value) -> str:
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "–"
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "no"
        if key in self.percent and isinstance(value, (int, float, np.number)):
            return f"{100 * float(value):.0f}%"
        if isinstance(value, (int, np.integer)):
            return f"{int(value):,}"
        if isinstance(value, (float, np.floating)):
            # seconds, milliseconds, pixel counts: whole numbers read better past 100
            return f"{float(value):,.0f}" if abs(value) >= 100 else f"{float(value):.{self.digits}f}"
        return str(value)

    def cells(self) -> list[list[str]]:
        return [[self.cell(key, row.get(key)) for key in self.columns] for row in self.rows]

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns.values()) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cells) + " |" for cells in self.cells()]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.columns.values())
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                       for cells in self.cells())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        table = [list(self.columns.values())] + self.cells()
        widths = [max(len(row[k]) for row in table) for k in range(len(self.columns))]
        return "\n".join("  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                                   for k, (c, w) in enumerate(zip(row, widths))) for row in table)


def model_table(model) -> Table:
    """A model's compact summary, one row per stage (:func:`scratch_utils.models.stage_table`)."""
    from .models import stage_table
    return Table(stage_table(model), {"stage": "stage", "layers": "layers",
                                      "output": "output (height x width x channels)",
                                      "parameters": "parameters", "trainable": "trainable"})


SCORE_HEADERS = {"dice": "Dice", "dice_defective_parts": "Dice per defective part", "iou": "IoU",
                 "miou": "mIoU", "tolerance_f1": "tolerance F1", "precision": "precision",
                 "recall": "recall", "detection_rate": "defective caught",
                 "located_detection_rate": "caught where the defect is",
                 "false_alarm_rate": "false alarms (good parts)", "auroc": "AUROC"}


def scores_table(rows: dict, keys=tuple(SCORE_HEADERS)) -> Table:
    """One row per model/split, one column per score (pixel scores at photo resolution)."""
    return Table.from_named(rows, "model / split", columns={k: SCORE_HEADERS.get(k, k) for k in keys},
                            percent=("detection_rate", "located_detection_rate", "false_alarm_rate"))


def with_interval(row: dict, key: str, percent: bool = False) -> str:
    """A test score with its 95% bootstrap interval over parts, e.g. ``0.41 [0.33, 0.49]``."""
    value, low, high = (row.get(f"test_{key}{end}") for end in ("", "_low", "_high"))
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    fmt = (lambda v: f"{100 * v:.0f}%") if percent else (lambda v: f"{v:.2f}")
    if low is None or high is None or low == high == value:
        return fmt(value)
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def decision_cell(row: dict) -> str:
    """The part-level rule in words: ``length ≥ 24 px above 0.4`` or ``part head ≥ 0.41``."""
    if row.get("decision_threshold") is None:
        return "every part, always"
    if row.get("rule") == "head":
        return f"part head ≥ {row['decision_threshold']:.3g}"
    return f"{row['region_measure']} ≥ {row['min_region']} px above {row['decision_threshold']:g}"
