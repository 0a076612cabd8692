"""Run folders: what ``train`` writes and ``predict``, ``evaluate``, the notebooks and the app read.

A run folder holds:

- ``model.keras``: the checkpoint kept on validation (loaded in Keras safe mode);
- ``config.json``: how it was trained (:class:`scratch_utils.train.TrainConfig`, the prepared
  folder and its geometry, timings);
- ``operating_point.json``: the **operating point**, chosen once on the validation photos and
  read from here by everything that makes a mask or a pass/fail call
  (:class:`scratch_utils.decision.OperatingPoint`);
- ``part_head.keras``: the part head that makes the call, when the point's rule is ``head``;
- ``metrics.json``: validation and test scores at the photos' own resolution at that point, the
  region rule's beside it, and the warnings ``train`` printed;
- ``history.csv`` and ``training_curves.png``: the per-epoch log;
- ``predictions/``: validation and test probabilities, reused by notebook 05.

Light to import (no TensorFlow until a model is loaded): the app reads runs through it.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .decision import OperatingPoint
from .files import atomic_write_json
from .geometry import Geometry

if TYPE_CHECKING:   # the app reads runs without the settings module
    from .profiles import TrainConfig

# What a run folder holds changed (6: the part head, `part_head.keras`, and an operating point
# chosen on located detection with a margin; metrics.json says when a model has not learned);
# an older run is trained again rather than read with fields it lacks.
RUN_FORMAT = 6
PART_HEAD = "part_head.keras"


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


def load_part_head(run: str | os.PathLike):
    """The run's part head (:mod:`scratch_utils.decision`), or None when it has none."""
    path = Path(run) / PART_HEAD
    if not path.is_file():
        return None
    import keras
    return keras.saving.load_model(path, safe_mode=True, compile=False)


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


@dataclass
class RunResult:
    """A finished run as the notebooks read it: how it was trained, how it decides, its scores on
    each split (``val``, ``test``: the score dicts of :func:`scratch_utils.evaluation.scores`,
    at the photos' own resolution) and its per-epoch history."""
    folder: Path
    config: TrainConfig
    point: OperatingPoint
    val: dict
    test: dict
    history: list
    train_seconds: float
    warnings: list

    @property
    def name(self) -> str:
        return self.folder.name


def read_run(run: str | os.PathLike) -> RunResult:
    """A run folder made by ``train``, read whole."""
    from .profiles import TrainConfig
    config, metrics = load_run_config(run), read_metrics(run)
    return RunResult(folder=Path(run), config=TrainConfig.from_dict(config),
                     point=OperatingPoint.from_dict(metrics["operating_point"]), val=metrics["val"],
                     test=metrics["test"], history=read_history(Path(run) / "history.csv"),
                     train_seconds=float(config["extra"]["train_seconds"]), warnings=metrics.get("warnings", []))
