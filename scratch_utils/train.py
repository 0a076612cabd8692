"""Training a model into a run folder (notebooks 03-05, ``python -m scratch_utils train``): the
fit, its callbacks, resuming, and the decision trained and chosen after it.

The model learns on tiles cut from the photos at their working resolution
(:func:`scratch_utils.pipeline.make_tile_dataset`: most of them centred on defects, a share on
places of good photos where the model fires, mined as it trains by :class:`HardNegativeMiner`)
and is judged the way it will be used, on whole validation photos
(:class:`WholePhotoValidation`, which keeps the best epoch; :class:`EpochLog` prints one line per
epoch). At the end ``train`` fits the part head on the training photos, chooses the operating
point on the validation predictions (:func:`scratch_utils.decision.choose_operating_point`),
writes the run folder (:mod:`scratch_utils.runs`) and only then scores the test split, once, at
the photos' own resolution.

**Resuming.** A run is trained in a hidden sibling of its run folder (``.NAME.training``) and
renamed when complete, so an interrupted run never leaves a half-written run folder or clobbers
an old one. The staging folder keeps, after every epoch, a Keras backup (weights, optimizer state,
epoch: ``keras.callbacks.BackupAndRestore``), the history and the best validation predictions;
``train`` run again with the same settings on the same data goes on from the last finished epoch.

**Whole-photo validation.** Every ``validate_every``-th epoch (and after the last) each
validation photo is predicted whole, by the app's code path
(:func:`scratch_utils.predict.probability_map`): ``val_loss`` is the training loss over all their
pixels at model resolution against the prepared masks; ``val_dice``, ``val_precision`` and
``val_recall`` are the pixel scores at threshold 0.5 at each photo's own resolution
(:func:`scratch_utils.evaluation.pixel_scores`). The epoch with the lowest ``val_loss`` is saved
as ``model.keras``. Keras' ModelCheckpoint and EarlyStopping are not used: they take a first NaN
for an improvement and never improve on it again.
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
from scipy import ndimage

from .augment import AugmentConfig
from .dataset import Prepared
from .decision import (choose_operating_point, feature_model, fit_head, head_input, head_scores,
                       learning_warnings)
from .errors import output_error
from .evaluation import SplitPredictions, inference_ms, pixel_scores, predict_split, save_predictions, scores, sweep
from .figures import plot_history
from .files import atomic_write_json
from .losses import get_loss
from .models import build_model, set_encoder_trainable
from .pipeline import HardNegatives, make_tile_dataset
from .predict import model_outputs, probability_map
from .profiles import TrainConfig
from .runs import (PART_HEAD, load_run_config, load_run_model, read_history, save_operating_point, write_config,
                   write_history)


# ------------------------------------------------------------------ the staging folder: resuming

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


# ------------------------------------------------------------------ callbacks

LOGGED = ("val_loss", "val_dice", "val_precision", "val_recall")
SCORE_THRESHOLD = 0.5   # the per-epoch pixel scores; the run's mask threshold is chosen at the end


class WholePhotoValidation(keras.callbacks.Callback):
    """Scores the validation photos after every ``every``-th epoch and the last of ``epochs``;
    saves the best epoch to ``checkpoint`` and keeps its predictions (also in ``keep_best``, an
    ``.npz`` with a ``.json`` beside it, for a resumed run). ``patience`` > 0 stops training
    after that many scored epochs without improvement."""

    def __init__(self, prepared: Prepared, loss: str, every: int = 1, epochs: int | None = None,
                 checkpoint: Path | None = None, keep_best: Path | None = None, patience: int = 0,
                 head_inputs: bool = False):
        super().__init__()
        # With a part head to fit, what it reads of each photo comes out of the same forward pass.
        self.head_inputs, self.best_head_inputs, self._network = head_inputs, None, None
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

    def predict(self) -> tuple[SplitPredictions, list | None]:
        """The validation photos' probabilities (and, for a part head, what it reads of them)."""
        if self._network is None:
            self._network = feature_model(self.model) if self.head_inputs else self.model
        probabilities, inputs = [], []
        for image, (x0, y0, w, h) in self.inputs:
            outputs = model_outputs(self._network, image.astype(np.float32) / 255.0)
            box = (slice(y0, y0 + h), slice(x0, x0 + w))
            probabilities.append(outputs[0][box].astype(np.float16))
            if self.head_inputs:
                inputs.append(head_input(outputs[0][box], outputs[1][box]))
        return SplitPredictions(self.prepared, self.rows, probabilities), inputs if self.head_inputs else None

    def validation_loss(self, predictions: SplitPredictions) -> float:
        truth = np.concatenate([m.reshape(-1) for m in self.prepared_masks]).astype(np.float32)
        predicted = np.concatenate([p.reshape(-1) for p in predictions.probabilities]).astype(np.float32)
        return float(self.loss(truth[None, :, None, None], predicted[None, :, None, None]))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if not self.scores_after(epoch):
            return
        predictions, inputs = self.predict()
        value = self.validation_loss(predictions)
        scores = pixel_scores(predictions, SCORE_THRESHOLD, self.truths)
        logs.update(val_loss=value, val_dice=scores["dice"], val_precision=scores["precision"],
                    val_recall=scores["recall"])
        if value < self.best_loss:
            self.best_loss, self.best, self.best_head_inputs, self.stale = value, predictions, inputs, 0
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


class HardNegativeMiner(keras.callbacks.Callback):
    """Before training and after every epoch, finds where the model fires on good training
    photos (a rotating sample of ``sample`` of them) and hands the tile plan those places:
    the highest probabilities, at most ``per_photo`` a photo and half a tile apart. The seams and
    edges a model mistakes for scratches become its training tiles."""

    def __init__(self, prepared: Prepared, hard_negatives: HardNegatives, tile: int, sample: int = 32,
                 per_photo: int = 4):
        super().__init__()
        self.prepared, self.hard_negatives, self.tile = prepared, hard_negatives, tile
        self.sample, self.per_photo = sample, per_photo
        rows = prepared.split("train")
        self.good = [k for k, row in enumerate(rows) if row["quality"] == "good"]
        self.rows, self.calls = rows, 0

    def mine(self) -> None:
        if not self.good:
            return
        start = (self.calls * self.sample) % len(self.good)
        picked = [self.good[(start + k) % len(self.good)] for k in range(min(self.sample, len(self.good)))]
        self.calls += 1
        places = []
        for index in picked:
            probability = probability_map(self.model, self.prepared.model_input(self.rows[index]))
            peaks = probability == ndimage.maximum_filter(probability, size=max(1, self.tile // 2), mode="nearest")
            ys, xs = np.nonzero(peaks)
            strongest = np.argsort(-probability[ys, xs], kind="stable")[:self.per_photo]
            places += [(index, ys[k], xs[k], probability[ys[k], xs[k]]) for k in strongest]
        places.sort(key=lambda place: -place[3])
        self.hard_negatives.update(np.array([place[:3] for place in places], np.int64))

    def on_train_begin(self, logs=None):
        self.mine()

    def on_epoch_end(self, epoch, logs=None):
        self.mine()


# ------------------------------------------------------------------ training

def set_seeds(seed: int, deterministic: bool = False) -> None:

    random.seed(seed)          # called, not assigned (the earlier car-paint project assigned random.seed = seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()


PRECISIONS = ("float32", "mixed_bfloat16")


def _strategy_and_precision(precision: str = "float32"):
    """MirroredStrategy with several GPUs; mixed float16 on any GPU, else ``precision`` (set for
    this model only: every training sets the policy it wants, so one run never inherits another's)."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    gpus = tf.config.list_physical_devices("GPU")
    keras.mixed_precision.set_global_policy("mixed_float16" if gpus else precision)
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return strategy, len(gpus)


SCHEDULES = ("cosine", "one_cycle")
WARMUP_SHARE = 0.2   # one_cycle: the learning rate climbs for the first fifth of the steps


def learning_rate_schedule(kind: str, learning_rate: float, steps: int):
    """Cosine decay from ``learning_rate`` to 0 over ``steps``; or one cycle: a linear warm-up
    from a 25th of it over the first fifth, then the same decay (Keras' CosineDecay does both)."""
    steps = max(1, steps)
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    if kind == "one_cycle":
        warmup = max(1, int(WARMUP_SHARE * steps))
        return keras.optimizers.schedules.CosineDecay(learning_rate / 25, decay_steps=max(1, steps - warmup),
                                                      warmup_target=learning_rate, warmup_steps=warmup)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")


def compile_model(model, loss: str, learning_rate, steps: int, schedule: str = "cosine", jit_compile: bool = False):
    """Adam on ``schedule``, the named loss, and the training tiles' IoU; ``jit_compile`` asks
    for XLA (Keras leaves it off on a CPU)."""
    schedule = learning_rate_schedule(schedule, learning_rate, steps)
    # IoU of the training tiles at model resolution, named so: every score a user sees is
    # computed on whole photos at their own resolution (scratch_utils.evaluation).
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=get_loss(loss),
                  metrics=[keras.metrics.BinaryIoU([1], threshold=0.5, name="tile_iou")], jit_compile=jit_compile)
    # Adam's moments made now, not inside the first traced step: a step that creates variables
    # is traced twice by TensorFlow (2-5 s a run on a CPU, a fifth of a smoke-profile run).
    model.optimizer.build(model.trainable_variables)
    return model


def train(prepared, out, config: TrainConfig | None = None, overwrite: bool = False,
          verbose: int = 2) -> Path:
    """Train one model on a prepared folder (a path or a :class:`Prepared`) and write its run
    folder; returns its path."""
    config = config or TrainConfig()
    out = Path(out)
    # Checked before TensorFlow loads: a mistake costs a second, not a start-up.
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"run folder {out} exists; choose another --out or pass --overwrite")
    prepared = Prepared.of(prepared)
    set_seeds(config.seed, config.deterministic)
    staging = staging_folder(out)
    resumed = open_staging(staging, {**config.identity(), "prepared": str(prepared.folder)})
    fit = Fitting(prepared, staging, config, verbose)
    validation, timing = fit.run(resumed)
    _evaluate_and_record(prepared, staging, config, validation, timing)
    return close_staging(staging, out)


class Fitting:
    """Build, compile and fit a model on tiles in its phases (a warm-up with the encoder
    frozen, then the rest), resuming from the staging folder's backups."""

    def __init__(self, prepared: Prepared, staging: Path, config: TrainConfig, verbose: int):
        self.prepared, self.staging, self.config, self.verbose = prepared, staging, config, verbose
        geometry = prepared.geometry
        self.tile = min(config.tile_size, geometry.size) if geometry.square else config.tile_size
        tiles = config.tiles_per_epoch or len(prepared.split("train"))
        self.steps = max(1, tiles // config.batch_size)
        self.hard_negatives = HardNegatives() if config.hard_negative_share else None

    def tiles(self, first_epoch: int):
        c = self.config
        return make_tile_dataset(self.prepared, self.tile, c.defect_share, c.batch_size,
                                 replace(AugmentConfig.tiles(), zoom=c.zoom) if c.augment else None, c.seed,
                                 first_tile=first_epoch * self.steps * c.batch_size, padding=c.tile_padding,
                                 hard_negatives=self.hard_negatives, hard_share=c.hard_negative_share)

    def build(self, strategy):
        c = self.config
        with strategy.scope():
            model = build_model(c.model, None, c.base_filters, depth=c.depth, upsampling=c.upsampling,
                                encoder_weights=c.encoder_weights, freeze_encoder=c.warmup_epochs > 0,
                                normalization=c.normalization)
            return compile_model(model, c.loss, c.learning_rate, self.steps * c.epochs, c.schedule, c.jit_compile)

    def callbacks(self, resumed: int) -> list:
        c = self.config
        validation = WholePhotoValidation(self.prepared, c.loss, c.validate_every, c.epochs,
                                          checkpoint=self.staging / "model.keras",
                                          keep_best=self.staging / KEEP_BEST, patience=c.early_stopping,
                                          head_inputs=c.decision == "head")
        if resumed:
            restore_progress(self.staging, validation)
        run_name = self.staging.name.lstrip(".").removesuffix(".training")   # the run folder's name
        log = EpochLog(self.staging / "history.csv", f"{run_name} ({c.model}, {c.loss})", c.epochs,
                       verbose=self.verbose > 0)
        miner = [HardNegativeMiner(self.prepared, self.hard_negatives, self.tile)] if self.hard_negatives else []
        return [validation, *miner, log]

    def run(self, resumed: int):
        """Fit; returns the validation callback (with the best predictions) and the timings."""

        c, warmup = self.config, self.config.warmup_epochs
        strategy, n_gpus = _strategy_and_precision(c.precision)
        try:
            model = self.build(strategy)
        finally:     # layers keep the policy they were built with; later models start from float32
            keras.mixed_precision.set_global_policy("float32")
        callbacks = self.callbacks(resumed)

        def fit(phase: str, first: int, last: int):
            # One backup folder per phase: the fine-tuning phase has another optimizer.
            backup = keras.callbacks.BackupAndRestore(self.staging / "backup" / phase, delete_checkpoint=False)
            start = max(first, min(backed_up_epoch(self.staging, phase), last))
            # The backup before the log: when an epoch's line is printed, the epoch is saved.
            model.fit(self.tiles(start), initial_epoch=first, epochs=last, steps_per_epoch=self.steps,
                      callbacks=[*callbacks[:-1], backup, callbacks[-1]], shuffle=False, verbose=0)

        started = time.perf_counter()
        if warmup:
            fit("warmup", 0, warmup)
        if c.epochs > warmup:
            if warmup:
                with strategy.scope():
                    set_encoder_trainable(model, True)
                    compile_model(model, c.loss, c.learning_rate * c.fine_tune_lr_factor,
                                  self.steps * (c.epochs - warmup), c.schedule, c.jit_compile)
            fit("main", warmup, c.epochs)
        return callbacks[0], self.timing(time.perf_counter() - started, n_gpus, resumed)

    def timing(self, seconds: float, n_gpus: int, resumed: int) -> dict:
        epochs_run = len(read_history(self.staging / "history.csv"))
        tiles_seen = epochs_run * self.steps * self.config.batch_size
        timing = {"train_seconds": round(seconds, 1), "epochs_run": epochs_run, "tiles_seen": tiles_seen,
                  "train_tiles_per_s": round(tiles_seen / seconds, 2), "tile_size": self.tile,
                  "gpus": n_gpus, "python": platform.python_version(), "keras": keras.__version__}
        if resumed:
            timing["resumed_at_epoch"] = resumed
        return timing


def fit_part_head(model, prepared: Prepared, seed: int = 0, photos: int = 0):
    """The part head (:mod:`scratch_utils.decision`) fitted on whole training photos, good ones
    included (``photos`` > 0: that many, evenly spread over the good and the defective), from the
    trained segmentation network's features and mask (kept frozen)."""
    network = feature_model(model)
    rows = prepared.split("train")
    if 0 < photos < len(rows):
        ordered = sorted(rows, key=lambda r: r["quality"])
        rows = [ordered[int(k * len(ordered) / photos)] for k in range(photos)]
    inputs, labels = [], []
    for row in rows:
        x0, y0, w, h = prepared.box(row)
        probability, features = model_outputs(network, prepared.model_input(row))[:2]
        inputs.append(head_input(probability[y0:y0 + h, x0:x0 + w], features[y0:y0 + h, x0:x0 + w]))
        labels.append(row["quality"] == "defective")
    return fit_head(inputs, labels, seed)


def _evaluate_and_record(prepared: Prepared, staging: Path, config: TrainConfig, validation, timing: dict):
    """Fit the part head when the run decides by it, choose the operating point on the
    validation photos, and only then score the test split, once; write config, operating point,
    predictions, metrics and curves."""
    best = load_run_model(staging)
    head, val = None, validation.best
    if config.decision == "head":
        started = time.perf_counter()
        head = fit_part_head(best, prepared, config.seed, config.head_photos)
        head.save(staging / PART_HEAD)
        if validation.best_head_inputs is not None:          # the best epoch's forward pass, kept
            val = SplitPredictions(prepared, val.rows, val.probabilities,
                                   part_scores=head_scores(head, validation.best_head_inputs))
        else:                                                # a resumed run: predict them again
            val = predict_split(best, prepared, "val", head)
        timing = {**timing, "head_seconds": round(time.perf_counter() - started, 1)}
    point = choose_operating_point(sweep(val), rule=config.decision)
    warnings = learning_warnings(val, point)
    save_operating_point(staging, point)
    write_config(staging, {**config.identity(), "geometry": prepared.geometry.as_dict(),
                           "prepared": str(prepared.folder),
                           "extra": {**timing, "parameters": int(best.count_params())}})
    test = sweep(predict_split(best, prepared, "test", head))
    for split, predictions in (("val", val), ("test", test)):
        save_predictions(predictions, staging / "predictions" / f"{split}.npz")
    losses = [row["val_loss"] for row in read_history(staging / "history.csv") if row["val_loss"] == row["val_loss"]]
    metrics = {"val": scores(val, point), "test": scores(test, point),
               "operating_point": point.as_dict(), "inference_ms_per_photo": inference_ms(best, prepared),
               # None, not False, after one scored epoch: there is nothing to compare it with
               "warnings": warnings, "improving_at_end": losses[-1] < losses[-2] if len(losses) >= 2 else None}
    atomic_write_json(staging / "metrics.json", metrics)
    for warning in warnings:
        print(f"warning: {staging.name.lstrip('.').removesuffix('.training')}: {warning}", flush=True)
    plot_history(read_history(staging / "history.csv"), staging / "training_curves.png",
                 title=f"{config.model} ({config.loss})")


def reused_line(run: Path) -> str:
    """What a reused run prints instead of its epochs: that it trained earlier, and how it ended."""
    from .runs import read_history
    history = read_history(Path(run) / "history.csv")
    scored = [h for h in history if h.get("val_dice", float("nan")) == h.get("val_dice", float("nan"))]
    last = (f"; its last validation during training: loss {scored[-1]['val_loss']:.3f}, Dice "
            f"{scored[-1]['val_dice']:.3f} at mask threshold {SCORE_THRESHOLD:g} (the results use the chosen threshold)"
            if scored else "")
    return (f"{Path(run).name}: reused, trained earlier for {len(history)} epoch{'s' * (len(history) != 1)} "
            f"(history.csv){last}")


def train_or_reuse(prepared, out, config: TrainConfig, reuse: bool = True, verbose: int = 2) -> Path:
    """Reuse the run in ``out`` when it was trained the same way on the same data, else train.

    Notebook 05 reuses the runs of notebooks 03 and 04 this way; a changed setting, prepared
    folder or run format retrains (replacing the old run only once the new one is complete).
    """
    out, prepared = Path(out), Prepared.of(prepared)
    if reuse and (out / "model.keras").is_file():
        try:
            previous = load_run_config(out)
        except (FileNotFoundError, ValueError):    # missing, or an older format
            previous = None
        # A setting the stored run does not name was added after it was trained: what the run
        # did there is unknown (today's default may be a new behaviour), so it trains again.
        if (previous and all(key in previous and previous[key] == value for key, value in config.identity().items())
                and Path(previous.get("prepared", "")) == prepared.folder):
            if verbose:
                print(reused_line(out), flush=True)
            return out
    return train(prepared, out, config, overwrite=True, verbose=verbose)
