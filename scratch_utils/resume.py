"""Resuming an interrupted training (Colab drops runtimes): the staging folder.

A run is trained in a hidden sibling of its run folder (``.NAME.training``) and renamed when
complete, so an interrupted run never leaves a half-written run folder or clobbers an old one.
The staging folder keeps, after every epoch, a Keras backup (weights, optimizer state, epoch:
``keras.callbacks.BackupAndRestore``), the history and the best validation predictions; ``train``
run again with the same settings on the same data goes on from the last finished epoch.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .files import atomic_write_json
from .runs import read_history, write_history

IDENTITY_FILE = "identity.json"
KEEP_BEST = Path("predictions") / "val-best.npz"


def staging_folder(out: Path) -> Path:
    return out.with_name(f".{out.name}.training")


def backed_up_epoch(staging: Path, phase: str | None = None) -> int:
    """Epochs finished according to a phase's backup (any phase's when ``phase`` is None)."""
    if phase is None:
        return max(backed_up_epoch(staging, "warmup"), backed_up_epoch(staging, "main"))
    metadata = staging / "backup" / phase / "training_metadata.json"
    if not metadata.is_file():
        return 0
    return int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])


def open_staging(staging: Path, identity: dict) -> int:
    """Keep a staging folder left by an interrupted run of the same settings on the same data
    and return the epochs it finished; else start an empty one and return 0."""
    marker = staging / IDENTITY_FILE
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == identity:
        finished = backed_up_epoch(staging)
        if finished:
            return finished
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    atomic_write_json(marker, identity)
    return 0


def restore_progress(staging: Path, validation) -> None:
    """Cut the history to the finished epochs and give the validation callback back the best
    loss so far (so it checkpoints only a better epoch) and its predictions."""
    finished = backed_up_epoch(staging)
    history_path = staging / "history.csv"
    history = read_history(history_path) if history_path.is_file() else []
    history = [row for row in history if row["epoch"] < finished]
    write_history(history_path, history)
    kept = staging / KEEP_BEST
    best_file = kept.with_suffix(".json")
    if not (history and best_file.is_file() and kept.is_file()):
        return
    best = json.loads(best_file.read_text(encoding="utf-8"))
    if best["epoch"] < finished:
        validation.restore(best["val_loss"], kept)


def close_staging(staging: Path, out: Path) -> Path:
    """Drop what only a resumed run needed and move the finished run into place."""
    shutil.rmtree(staging / "backup", ignore_errors=True)
    for leftover in (staging / KEEP_BEST, (staging / KEEP_BEST).with_suffix(".json"),
                     staging / IDENTITY_FILE):
        leftover.unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out
