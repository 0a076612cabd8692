"""Run folders: what ``train`` writes and ``predict``, ``evaluate``, the notebooks and the app read.

A run folder holds:

- ``model.keras``: the checkpoint kept on validation (loaded in Keras safe mode);
- ``config.json``: how it was trained (:class:`scratch_utils.train.TrainConfig`, the prepared
  folder and its geometry, timings);
- ``operating_point.json``: the **operating point**, chosen once on the validation photos and
  read from here by everything that makes a mask or a pass/fail call (:class:`OperatingPoint`);
- ``metrics.json``: validation and test scores at the photos' own resolution at that point;
- ``history.csv`` and ``training_curves.png``: the per-epoch log;
- ``predictions/``: validation and test probabilities, reused by notebook 05.

Light to import (no TensorFlow until a model is loaded): the app reads runs through it.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .files import atomic_write_json
from .geometry import Geometry
from .metrics import REGION_MEASURES

# What a run folder holds changed (5: `target_met` is the plant's whole target, caught and false
# alarms; metrics.json says when a model has not learned); an older run is trained again rather
# than read with fields it lacks.
RUN_FORMAT = 5
TARGET_DETECTION = 0.95     # the plant's target: share of defective parts caught ...
TARGET_FALSE_ALARMS = 0.05  # ... with at most this share of good parts flagged


@dataclass
class OperatingPoint:
    """The thresholds a run is used at, chosen on validation photos by ``train``.

    - ``mask_threshold``: a pixel is masked at or above it (the mask a user sees and every
      pixel score; chosen for the best Dice);
    - ``decision_threshold``, ``min_region`` and ``region_measure``: a part is called defective
      when one connected region of pixels at or above ``decision_threshold`` reaches
      ``min_region`` pixels at model resolution, measured along its skeleton (``length``: a
      scratch is long, a speck compact) or as its ``area`` (chosen on validation to catch
      ``target`` of the defective parts with the fewest false alarms on good ones).

    On the split it was chosen on, ``detection_target_met`` says it catches ``target`` of the
    defective parts, and ``target_met`` that it meets the plant's whole target: that, with at
    most ``false_alarm_limit`` of the good parts flagged.
    """
    mask_threshold: float
    decision_threshold: float
    min_region: int
    region_measure: str = "length"
    detection_rate: float = float("nan")    # on the split it was chosen on
    false_alarm_rate: float = float("nan")
    detection_target_met: bool = False
    target_met: bool = False
    target: float = TARGET_DETECTION
    false_alarm_limit: float = TARGET_FALSE_ALARMS
    chosen_on: str = "val"

    @classmethod
    def from_dict(cls, values: dict) -> "OperatingPoint":
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    def as_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, mask_threshold: float | None = None,
                       decision_threshold: float | None = None,
                       min_region: int | None = None, region_measure: str | None = None) -> "OperatingPoint":
        """This point with the named values replaced (``None`` keeps the chosen one)."""
        if region_measure is not None and region_measure not in REGION_MEASURES:
            raise ValueError(f"region_measure must be one of {', '.join(REGION_MEASURES)}, not {region_measure!r}")
        values = self.as_dict()
        for key, value in (("mask_threshold", mask_threshold), ("decision_threshold", decision_threshold),
                           ("min_region", min_region), ("region_measure", region_measure)):
            if value is not None:
                values[key] = value
                values["chosen_on"] = "overridden"
        return OperatingPoint(**values)


def _file(run, name: str) -> Path:
    path = Path(run) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a run folder made by `train`?")
    return path


def save_operating_point(run: str | os.PathLike, point: OperatingPoint) -> Path:
    path = Path(run) / "operating_point.json"
    atomic_write_json(path, point.as_dict())
    return path


def load_operating_point(run: str | os.PathLike) -> OperatingPoint:
    return OperatingPoint.from_dict(json.loads(_file(run, "operating_point.json").read_text("utf-8")))


def write_config(run: str | os.PathLike, config: dict) -> None:
    """Write ``config.json``, stamped with this version's :data:`RUN_FORMAT`."""
    config = {**config, "extra": {**config.get("extra", {}), "run_format": RUN_FORMAT}}
    atomic_write_json(Path(run) / "config.json", config)


def load_run_config(run: str | os.PathLike) -> dict:
    """The run's ``config.json``; a run of an older format is a clear error."""
    config = json.loads(_file(run, "config.json").read_text(encoding="utf-8"))
    found = config.get("extra", {}).get("run_format")
    if found != RUN_FORMAT:
        raise ValueError(f"{run} was written in run format {found}, this version reads {RUN_FORMAT}: "
                         f"train it again (the notebooks retrain such runs by themselves)")
    return config


def run_geometry(config: dict) -> Geometry:
    return Geometry.from_dict(config["geometry"])


def load_run_model(run: str | os.PathLike):
    """The run's model, loaded in Keras safe mode (no lambdas, no pickled code)."""
    import keras

    from . import losses, models  # noqa: F401 - registers the custom classes
    return keras.saving.load_model(_file(run, "model.keras"), safe_mode=True, compile=False)


def read_metrics(run: str | os.PathLike) -> dict:
    return json.loads(_file(run, "metrics.json").read_text(encoding="utf-8"))


def read_history(path: str | os.PathLike) -> list[dict]:
    """``history.csv`` as rows of floats (NaN where validation was not scored: an empty cell)."""
    with Path(path).open(newline="") as handle:
        return [{key: float(value) if value not in ("", None) else float("nan") for key, value in row.items()}
                for row in csv.DictReader(handle)]


def write_history(path: Path, history: list[dict]) -> None:
    """Rewrite ``history.csv`` (a resumed run cuts it to its finished epochs)."""
    if not history:
        Path(path).unlink(missing_ok=True)
        return
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows({k: (int(v) if k == "epoch" else "" if v != v else v) for k, v in row.items()}
                         for row in history)
