"""Whole-photo validation during training: the per-epoch log and the checkpoint (notebook 03).

The model learns on tiles but is used on whole photos, so it is judged on whole photos: every
``every``-th epoch (and after the last) each validation photo is predicted whole, by the app's
code path (:func:`scratch_utils.predict.probability_map`), and

- ``val_loss`` is the training loss over all their pixels, at model resolution against the
  prepared masks (a loss is defined where the model works);
- ``val_dice``, ``val_precision`` and ``val_recall`` are the pixel scores of the mask at
  threshold 0.5, at each photo's own resolution against its label polygons: computed by
  :func:`scratch_utils.evaluation.pixel_scores` from the same sweep and formulas as the scores
  of ``metrics.json`` (:func:`scratch_utils.evaluation.scores`).

Epochs in between log nothing for validation (an empty cell in ``history.csv``, written by
:class:`EpochLog`, which also prints one line per epoch naming the model). The epoch with the lowest ``val_loss`` is saved as ``model.keras``
and its predictions are kept, on which ``train`` then chooses the operating point. Keras'
ModelCheckpoint and EarlyStopping are not used: they take a first NaN for an improvement and
never improve on it again.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from .evaluation import SplitPredictions, pixel_scores, save_predictions
from .errors import output_error
from .files import atomic_write_json
from .losses import get_loss
from .predict import probability_map
from .dataset import Prepared

LOGGED = ("val_loss", "val_dice", "val_precision", "val_recall")
SCORE_THRESHOLD = 0.5   # the per-epoch pixel scores; the run's mask threshold is chosen at the end


class WholePhotoValidation(keras.callbacks.Callback):
    """Scores the validation photos after every ``every``-th epoch and the last of ``epochs``;
    saves the best epoch to ``checkpoint`` and keeps its predictions (also in ``keep_best``, an
    ``.npz`` with a ``.json`` beside it, for a resumed run). ``patience`` > 0 stops training
    after that many scored epochs without improvement."""

    def __init__(self, prepared: Prepared, loss: str, every: int = 1, epochs: int | None = None,
                 checkpoint: Path | None = None, keep_best: Path | None = None, patience: int = 0):
        super().__init__()
        if every < 1:
            raise ValueError(f"validate_every must be at least 1, got {every}")
        self.prepared, self.every, self.epochs = prepared, every, epochs
        self.checkpoint, self.keep_best, self.patience = checkpoint, keep_best, patience
        self.rows = prepared.split("val")
        self.inputs = [((prepared.model_input(row) * 255).round().astype(np.uint8), prepared.box(row))
                       for row in self.rows]
        self.prepared_masks = [prepared.prepared_mask(row) for row in self.rows]
        truths = {row["stem"]: prepared.truths(row["stem"]) for row in self.rows}
        self.truths = truths.__getitem__
        self.loss = get_loss(loss)
        self.best_loss, self.best, self.stale = math.inf, None, 0

    def restore(self, best_loss: float, kept: Path) -> None:
        """Resume: the best loss so far and its predictions, kept in ``kept``."""
        self.best_loss = best_loss
        with np.load(kept) as stored:
            self.best = SplitPredictions(self.prepared, self.rows, [stored[row["stem"]] for row in self.rows])

    def scores_after(self, epoch: int) -> bool:
        return (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs

    def predict(self) -> SplitPredictions:
        probabilities = []
        for image, (x0, y0, w, h) in self.inputs:
            probability = probability_map(self.model, image.astype(np.float32) / 255.0)
            probabilities.append(probability[y0:y0 + h, x0:x0 + w].astype(np.float16))
        return SplitPredictions(self.prepared, self.rows, probabilities)

    def validation_loss(self, predictions: SplitPredictions) -> float:
        truth = np.concatenate([m.reshape(-1) for m in self.prepared_masks]).astype(np.float32)
        predicted = np.concatenate([p.reshape(-1) for p in predictions.probabilities]).astype(np.float32)
        return float(self.loss(truth[None, :, None, None], predicted[None, :, None, None]))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if not self.scores_after(epoch):
            return
        predictions = self.predict()
        value = self.validation_loss(predictions)
        scores = pixel_scores(predictions, SCORE_THRESHOLD, self.truths)
        logs.update(val_loss=value, val_dice=scores["dice"], val_precision=scores["precision"],
                    val_recall=scores["recall"])
        if value < self.best_loss:
            self.best_loss, self.best, self.stale = value, predictions, 0
            self._keep(epoch, value)
        else:
            self.stale += 1
            if self.patience and self.stale >= self.patience:
                self.model.stop_training = True

    def _keep(self, epoch: int, value: float) -> None:
        if self.checkpoint is not None:   # written whole, then renamed: a kill leaves the last one
            partial = self.checkpoint.with_name(f"{self.checkpoint.stem}.partial.keras")
            try:
                self.model.save(partial)
                os.replace(partial, self.checkpoint)
            except OSError as exc:   # weights and Adam's two moments, 4 bytes each: what a save needs
                partial.unlink(missing_ok=True)
                raise output_error(exc, self.checkpoint, 12 * self.model.count_params()) from None
        if self.keep_best is not None:    # what a resumed run needs of this epoch
            save_predictions(self.best, self.keep_best)
            atomic_write_json(self.keep_best.with_suffix(".json"), {"epoch": epoch, "val_loss": value})


class EpochLog(keras.callbacks.Callback):
    """One row of ``history.csv`` and (``verbose``) one printed line per epoch, with only what
    was measured: the training tiles' loss and IoU, and the validation scores on scored epochs."""

    COLUMNS = ("epoch", "loss", "tile_iou") + LOGGED

    def __init__(self, path: Path, title: str, epochs: int, verbose: bool = True):
        super().__init__()
        self.path, self.title, self.epochs, self.verbose = Path(path), title, epochs, verbose
        self.started, self.first_epoch = None, None

    def on_epoch_begin(self, epoch, logs=None):
        if self.started is None:
            self.started, self.first_epoch = time.perf_counter(), epoch

    def time_left(self, epoch: int) -> str:
        """The remaining epochs at this run's pace so far, e.g. ``about 3 min left``."""
        done = epoch + 1 - (self.first_epoch or 0)
        if self.started is None or done <= 0 or epoch + 1 >= self.epochs:
            return "done"
        seconds = (time.perf_counter() - self.started) / done * (self.epochs - epoch - 1)
        return f"about {seconds / 60:.0f} min left" if seconds >= 90 else f"about {seconds:.0f} s left"

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch, **{key: logs.get(key) for key in self.COLUMNS[1:]}}
        new = not self.path.is_file()
        with self.path.open("a", encoding="utf-8") as handle:
            if new:
                handle.write(",".join(self.COLUMNS) + "\n")
            handle.write(",".join("" if v is None else str(v if k == "epoch" else float(v))
                                  for k, v in row.items()) + "\n")
        if self.verbose:
            line = f"{self.title} epoch {epoch + 1}/{self.epochs}: training tiles loss {row['loss']:.3f}"
            if row["val_loss"] is not None:
                line += (f"; validation photos loss {row['val_loss']:.3f}, Dice {row['val_dice']:.3f} "
                         f"(precision {row['val_precision']:.3f}, recall {row['val_recall']:.3f})")
            print(f"{line} [{self.time_left(epoch)}]", flush=True)
